"""lowbit.core: the ground floor, imported by every other part and importing none of them."""
