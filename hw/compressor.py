"""Compressor trees: population counts and multi-operand sums built for LUT6 fabrics.

Both functions reduce a matrix of bits, one column per binary weight, with parallel counters
until every column holds at most two bits, and finish with one carry-propagate adder:

- a 6:3 counter takes six bits of one column and gives their count as three bits in that
  column and the next two. Each output depends on exactly six inputs, so it is one LUT6, and
  the counter removes three bits for three LUTs;
- a 3:2 counter (a full adder) removes one bit for two LUTs. It is used where a column has too
  few bits left for a 6:3 counter, and as the first level when each input bit is itself a
  function of two signals (an XNOR of an input and a weight): three such bits are six LUT
  inputs, so the XNORs cost no LUTs of their own;
- the final adder is a plain ``+`` of the two remaining rows, which synthesis maps onto the
  carry chain (CARRY4 on xc7).

Counters are written as bitwise logic, never as ``+``, because synthesis turns every ``+`` into
a carry chain, which is the wrong tool for six bits.

Every counter output is a signal driven from the ``comb`` domain of a module that the caller
passes in. Returning one expression instead would share subexpressions between thousands of
uses, and Amaranth walks expressions as trees: the conversion time and the Verilog grow
exponentially with the depth of the tree.

The ``*_behavioural`` functions are the plain-sum baselines that the trees are proven against.
"""

from amaranth.hdl import (Cat, Const, Module, Shape, ShapeCastable, Signal, Value, ValueCastable,
                          signed, unsigned)

__all__ = [
    "popcount", "xnor_popcount", "popcount_behavioural", "popcount_width",
    "add_tree", "add_behavioural", "add_tree_shape", "bit_sum",
]


def _check_module(m):
    if not isinstance(m, Module):
        raise TypeError(f"Module must be an Amaranth Module, not {m!r}")


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _cast_value(name, value):
    if not isinstance(value, (Value, ValueCastable)):
        raise TypeError(f"{name} must be an Amaranth value, not {value!r}")
    return Value.cast(value)


def popcount_width(n):
    """Width of the count of ones of an ``n``-bit value: ``ceil(log2(n + 1))``.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    _check_positive("Width", n)
    return n.bit_length()


def add_tree_shape(shapes):
    """The narrowest shape that holds every sum of values of ``shapes``.

    The bound is exact: the sum ranges over ``[sum of minimums, sum of maximums]``, and the
    result is unsigned when that range has no negative number.

    Parameters
    ----------
    shapes : list of shape-castable
        Shapes of the terms (``unsigned(4)``, ``signed(3)``, ``range(-5, 6)``...).

    Returns
    -------
    Shape

    Raises
    ------
    ValueError
        If ``shapes`` is not a non-empty list.
    TypeError
        If an element is not shape-castable.
    """
    if not isinstance(shapes, (list, tuple)) or not shapes:
        raise ValueError(f"Shapes must be a non-empty list, not {shapes!r}")
    lo = hi = 0
    for shape in shapes:
        if not isinstance(shape, (Shape, ShapeCastable, int, range)) or isinstance(shape, bool):
            raise TypeError(f"Shape must be shape-castable, not {shape!r}")
        s = Shape.cast(shape)
        if s.signed:
            lo -= 1 << (s.width - 1)
            hi += (1 << (s.width - 1)) - 1
        else:
            hi += (1 << s.width) - 1
    return _shape_of_range(lo, hi)


def _full_add(a, b, c):
    return a ^ b ^ c, (a & b) | (c & (a ^ b))


def _half_add(a, b):
    return a ^ b, a & b


def _wire(m, expr, name, width=1):
    sig = Signal(width, name=name)
    m.d.comb += sig.eq(expr)
    return sig


def _counter(m, bits, name):
    """Count of ``bits`` (all of one weight) as signals of bitwise logic, least significant first."""
    cols = [list(bits)]
    i = 0
    while i < len(cols):
        col = cols[i]
        while len(col) > 1:
            if len(col) >= 3:
                s, c = _full_add(col.pop(0), col.pop(0), col.pop(0))
            else:
                s, c = _half_add(col.pop(0), col.pop(0))
            col.append(s)
            if i + 1 == len(cols):
                cols.append([])
            cols[i + 1].append(c)
        i += 1
    # The network can leave carries that are always zero above the count's width.
    return [_wire(m, col[0], f"{name}_c{len(bits)}_{k}")
            for k, col in enumerate(cols[:len(bits).bit_length()])]


def _register_columns(pipe, columns, name):
    """Every bit of the matrix through one register of ``pipe``, column by column."""
    out = []
    for i, col in enumerate(columns):
        if not col:
            out.append([])
            continue
        reg = pipe.register(Cat(*col), f"{name}_w{i}")
        out.append([reg[k] for k in range(len(col))])
    return out


def _compress(m, columns, width, name, first_group=6, pipe=None):
    """Sum of a bit matrix modulo ``2**width``; ``columns[i]`` holds the bits of weight ``2**i``.

    With a ``pipe`` (:class:`lowbit.hw.pipe.Pipe`), the bits pass a register every
    ``pipe.every`` counter levels, and the last two rows pass one before the final adder.
    """
    columns = [list(col) for col in columns[:width]]
    columns += [[] for _ in range(width - len(columns))]
    group = first_group
    level = 0
    stages = 0
    while max(len(col) for col in columns) > 2:
        out = [[] for _ in range(width)]
        used_wide = False
        leftovers = []
        for i, col in enumerate(columns):
            j = 0
            while len(col) - j >= group:
                for k, bit in enumerate(_counter(m, col[j:j + group], f"{name}_l{level}_w{i}")):
                    if i + k < width:
                        out[i + k].append(bit)
                j += group
                used_wide = True
            leftovers.append(col[j:])
        for i, rest in enumerate(leftovers):
            # Bits that did not fill a counter wait for the next level, where they join the
            # counts arriving in their column; only when no wide counter fits anywhere any
            # more do full adders take three at a time.
            if not used_wide:
                while len(rest) >= 3:
                    for k, bit in enumerate(_counter(m, rest[:3], f"{name}_l{level}_w{i}")):
                        if i + k < width:
                            out[i + k].append(bit)
                    rest = rest[3:]
            out[i].extend(rest)
        columns = out
        group = 6
        level += 1
        if pipe is not None and level % pipe.every == 0:
            columns = _register_columns(pipe, columns, f"{name}_s{stages}")
            stages += 1
    if pipe is not None and (level == 0 or level % pipe.every):
        # The carry-propagate adder starts from registers: with the accumulator's adder after it,
        # two carry chains and no counter level are between this stage and the next.
        columns = _register_columns(pipe, columns, f"{name}_s{stages}")
        stages += 1
    if pipe is not None:
        pipe.mark(stages)
    rows = []
    for r in range(2):
        rows.append(Cat(*(col[r] if len(col) > r else Const(0, 1) for col in columns)))
    return (rows[0] + rows[1])[:width]


def popcount(m, value, *, inputs_per_bit=1, name="popcount", pipe=None):
    """Number of ones in ``value``, as a compressor tree of 6:3 counters.

    Parameters
    ----------
    m : Module
        Receives the counters as ``comb`` assignments to new signals.
    value : Value
        The bits to count, ``n >= 1`` of them.
    inputs_per_bit : int
        How many signals each bit of ``value`` is a function of. With 2 (each bit is e.g. an
        XNOR of an input and a weight) the first level uses 3:2 counters, whose outputs are
        functions of six signals and so still fit one LUT6 each.
    name : str
        Prefix of the counters' signal names.
    pipe : Pipe, optional
        Registers the tree's bits every ``pipe.every`` levels (see :mod:`lowbit.hw.pipe`); the
        count then comes ``pipe.stages`` cycles after ``value``.

    Returns
    -------
    Value
        Unsigned, exactly :func:`popcount_width` ``(len(value))`` bits wide.

    Raises
    ------
    TypeError
        If ``m`` is not a Module or ``value`` is not an Amaranth value.
    ValueError
        If ``value`` has no bits, or ``inputs_per_bit`` is not a positive integer.
    """
    _check_module(m)
    value = _cast_value("Value", value)
    _check_positive("Inputs per bit", inputs_per_bit)
    n = len(value)
    if n < 1:
        raise ValueError(f"Value must be at least 1 bit wide, not {n}")
    width = popcount_width(n)
    if n == 1:
        return value.as_unsigned()
    if not isinstance(value, Signal):
        # Every counter slices one bit out of ``value``; a slice of an expression repeats the
        # whole expression in the output, n times over.
        value = _wire(m, value, f"{name}_bits", n)
    return _compress(m, [[value[i] for i in range(n)]], width, name,
                     first_group=max(2, 6 // inputs_per_bit), pipe=pipe)


def xnor_popcount(m, a, b, *, name="xnor_popcount", pipe=None):
    """``popcount(m, ~(a ^ b))``, with the XNORs folded into the first counter level.

    For ±1 vectors encoded as bits (1 = +1): ``dot(a, b) = 2 * xnor_popcount(m, a, b) - n``.

    Raises
    ------
    TypeError
        If ``m`` is not a Module, or ``a`` or ``b`` is not an Amaranth value.
    ValueError
        If the widths differ or are zero.
    """
    _check_module(m)
    a = _cast_value("A", a)
    b = _cast_value("B", b)
    if len(a) != len(b):
        raise ValueError(f"Operands must have the same width, not {len(a)} and {len(b)}")
    return popcount(m, ~(a.as_unsigned() ^ b.as_unsigned()), inputs_per_bit=2, name=name, pipe=pipe)


def _balanced_sum(terms):
    while len(terms) > 1:
        paired = [a + b for a, b in zip(terms[0::2], terms[1::2])]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


def popcount_behavioural(value):
    """Number of ones in ``value`` as a balanced tree of plain ``+``, left to synthesis.

    Same contract as :func:`popcount` (unsigned, :func:`popcount_width` bits); the baseline
    that the compressor tree is proven equal to and measured against.
    """
    value = _cast_value("Value", value)
    n = len(value)
    if n < 1:
        raise ValueError(f"Value must be at least 1 bit wide, not {n}")
    return _balanced_sum([value[i] for i in range(n)])[:popcount_width(n)]


def _check_terms(terms):
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError(f"Terms must be a non-empty list, not {terms!r}")
    return [_cast_value("Term", term) for term in terms]


def _fit(value, shape):
    # Both sums are exact modulo 2**width and the true sum fits the shape, so the low bits
    # reinterpreted with the shape's signedness are the sum.
    bits = value.as_unsigned()[:shape.width]
    return bits.as_signed() if shape.signed else bits


def _shape_of_range(lo, hi):
    if lo >= 0:
        return unsigned(max(hi.bit_length(), 1))
    return signed(max(hi.bit_length(), (-lo - 1).bit_length()) + 1)


def _sum_matrix(m, columns, constant, shape, name, inputs_per_bit, pipe=None):
    """``sum of columns[i] bits * 2**i + constant`` in ``shape``; the true sum must fit it."""
    width = shape.width
    columns = [list(col) for col in columns[:width]] + [[] for _ in range(width - len(columns))]
    constant %= 1 << width
    for i in range(width):
        if constant >> i & 1:
            columns[i].append(Const(1, 1))
    if max(len(col) for col in columns) <= 1:
        return _fit(Cat(*(col[0] if col else Const(0, 1) for col in columns)), shape)
    return _fit(_compress(m, columns, width, name, first_group=max(2, 6 // inputs_per_bit), pipe=pipe),
                shape)


def add_tree(m, terms, *, constant=0, inputs_per_bit=1, name="add_tree", pipe=None):
    """Sum of signed or unsigned values by column compression; it never overflows.

    A signed term ``t`` of width ``w`` is ``-2**(w-1) * t[w-1] + t[:w-1]``. Writing
    ``-t[w-1] = ~t[w-1] - 1`` turns every bit into a positive one and leaves one constant,
    ``-sum of 2**(w-1)`` over the signed terms, whose ones join the matrix. The matrix is then
    summed modulo ``2**width`` of :func:`add_tree_shape`, which is exact because the true sum
    fits that shape.

    Parameters
    ----------
    m : Module
        Receives the counters as ``comb`` assignments to new signals.
    terms : list of Value
        Operands, any mix of shapes.
    constant : int
        Added to the sum; its ones join the matrix, so it costs no adder of its own.
    inputs_per_bit : int
        How many signals each bit of the terms is a function of, as in :func:`popcount`.
    name : str
        Prefix of the counters' signal names.
    pipe : Pipe, optional
        Register stages in the tree, as in :func:`popcount`.

    Returns
    -------
    Value
        Of shape ``add_tree_shape([t.shape() for t in terms])``, or with a nonzero
        ``constant`` the narrowest shape that holds that range moved by ``constant``.

    Raises
    ------
    ValueError
        If ``terms`` is not a non-empty list, or ``inputs_per_bit`` is not a positive integer.
    TypeError
        If ``m`` is not a Module, a term is not an Amaranth value, or ``constant`` is not an
        integer.
    """
    _check_module(m)
    terms = _check_terms(terms)
    _check_constant(constant)
    _check_positive("Inputs per bit", inputs_per_bit)
    shape = add_tree_shape([t.shape() for t in terms])
    if constant:
        lo, hi = _shape_bounds(shape)
        shape = _shape_of_range(lo + constant, hi + constant)
    columns = [[] for _ in range(shape.width)]
    for term in terms:
        w = len(term)
        if w == 0:
            continue
        for i in range(w - 1):
            columns[i].append(term[i])
        if term.shape().signed:
            columns[w - 1].append(~term[w - 1])
            constant -= 1 << (w - 1)
        else:
            columns[w - 1].append(term[w - 1])
    return _sum_matrix(m, columns, constant, shape, name, inputs_per_bit, pipe)


def bit_sum(m, bits, *, constant=0, inputs_per_bit=1, name="bit_sum", pipe=None):
    """``constant + sum of bit * 2**column`` over ``(column, bit)`` pairs, by column compression.

    The building block for sums whose terms are known bit by bit, such as products with
    constant weights: a term ``-2**c * b`` is passed as ``(c, ~b)`` with ``-2**c`` added to
    ``constant`` (``-b = ~b - 1``), so no bit ever needs a negation of its own.

    Parameters
    ----------
    m : Module
        Receives the counters as ``comb`` assignments to new signals.
    bits : list of (int, Value)
        Column (a non-negative integer) and a 1-bit value.
    constant : int
        Added to the sum.
    inputs_per_bit, name, pipe
        As in :func:`add_tree`.

    Returns
    -------
    Value
        Of the narrowest shape that holds ``[constant, constant + sum of 2**column]``.

    Raises
    ------
    TypeError
        If ``m`` is not a Module, a bit is not an Amaranth value, or ``constant`` or a column
        is not an integer.
    ValueError
        If a bit is not 1 bit wide, a column is negative, or ``inputs_per_bit`` is not a
        positive integer.
    """
    _check_module(m)
    _check_constant(constant)
    _check_positive("Inputs per bit", inputs_per_bit)
    checked = []
    for column, bit in bits:
        if not isinstance(column, int) or isinstance(column, bool):
            raise TypeError(f"Column must be an integer, not {column!r}")
        if column < 0:
            raise ValueError(f"Column must be non-negative, not {column}")
        bit = _cast_value("Bit", bit)
        if len(bit) != 1:
            raise ValueError(f"Bit must be 1 bit wide, not {len(bit)}")
        checked.append((column, bit))
    hi = constant + sum(1 << column for column, _ in checked)
    shape = _shape_of_range(constant, hi)
    if not checked:
        return Const(constant, shape)
    columns = [[] for _ in range(shape.width)]
    for column, bit in checked:
        if column < shape.width:
            columns[column].append(bit)
    return _sum_matrix(m, columns, constant, shape, name, inputs_per_bit, pipe)


def _check_constant(constant):
    if not isinstance(constant, int) or isinstance(constant, bool):
        raise TypeError(f"Constant must be an integer, not {constant!r}")


def _shape_bounds(shape):
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def add_behavioural(terms):
    """Sum of ``terms`` as a balanced tree of plain ``+``; the baseline for :func:`add_tree`.

    Returns a value of the same shape as :func:`add_tree`.
    """
    terms = _check_terms(terms)
    shape = add_tree_shape([t.shape() for t in terms])
    return _fit(_balanced_sum(terms), shape)
