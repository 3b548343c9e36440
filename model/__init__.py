"""lowbit.model."""
