"""lowbit.hw."""
