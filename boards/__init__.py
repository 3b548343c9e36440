"""lowbit.boards."""
