"""One module per op kind; :mod:`lowbit.compiler.ir` registers them."""
