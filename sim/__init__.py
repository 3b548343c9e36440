"""lowbit.sim."""
