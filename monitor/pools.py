"""Multi-asset collateral pools (docs/collateral.md): valuation, prices, trigger bands.

A pool is one entity per account in multi-assets mode: every linear cross position of the
account, whatever its margin asset, backed by every wallet of the account. Per asset ``a``:

* equity ``E_a = wallet_a + Σ uPnL`` of the pool's positions whose margin asset is ``a``;
* its value in USD ``v_a(E_a) = E_a · p_a · (1 − h_a)`` when ``E_a >= 0`` (gains and holdings
  are haircut), ``E_a · p_a`` when ``E_a < 0`` (losses count in full);

and for the pool ``MB = Σ_a v_a(E_a)``, ``MM = Σ_i MM_i · p_{a(i)}`` (each position's MM in its
margin asset, at that asset's price, no haircut), ratio ``MM / MB``, liquidated when
``MB <= MM``; ``p_a`` and ``h_a`` come from the latest ``collateral`` record of ``a``. A pool
that needs an asset (a nonzero wallet, or a position's margin asset) without a price yet is not
valued at all.

Liquidation and bankruptcy prices of a pool's symbol (its legs move together, every other mark
and every collateral price held): along that mark, ``MB − MM`` is piecewise linear, its pieces
cut where a leg changes tier and where the equity of the symbol's margin asset crosses zero
(where the haircut switches on); each piece's root is kept when it lies in the piece, and the
one nearest the current mark is the answer (equally near: the lower), ``None`` when there is
none.

Trigger bands (see :mod:`monitor.bands`): a threshold ``α·MM − β·MB`` of a pool is split per
symbol as for any entity, with each symbol's terms scaled by its asset's price, and its uPnL
weighted by how much a change of it can move ``MB``. ``v_a`` is concave with slopes between
``p_a(1 − h_a)`` and ``p_a``, so ``Σ_j g(ΔuPnL_j)`` with ``g(Δ) = p_a(1 − h_a)·Δ`` for a gain
and ``p_a·Δ`` for a loss never exceeds the change of ``MB`` (the bound for a threshold that
fires when the ratio rises), and ``v_a'(E_a)·ΔE_a`` never falls below it (the bound for one that
fires when the ratio falls); along one symbol's mark the uPnL moves one way on each side, so each
side of a band uses one weight. A collateral price moves ``MB − MM`` linearly (``E_a`` is in
units of ``a``), so its band is exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

from monitor.bands import Threshold
from monitor.book import NONE, Book, Collateral
from monitor.events import AssetView
from monitor.exact import UNBOUNDED
from monitor.margin import INF, Leg, _breakpoints

if TYPE_CHECKING:
    from monitor.valuation import ExactMark

FLOAT_TOLERANCE = 1e-12


class PoolParts:
    """One pool valued per asset: equity, maintenance margin and error scale of each."""

    __slots__ = ("equity", "maintenance", "rows", "scale")

    def __init__(self) -> None:
        self.equity: dict[int, float] = {}
        self.maintenance: dict[int, float] = {}
        self.scale: dict[int, float] = {}
        self.rows: dict[int, list[int]] = {}


def pool_parts(book: Book, entity: int) -> PoolParts:
    """The pool's equity per asset (wallets plus uPnL), MM per asset (in the asset), and the
    magnitudes entering each (floats)."""
    parts = PoolParts()
    balances = book.balances
    account = book.entities.v_account[entity]
    for row in book.balance_rows(account):
        wallet = balances.v_wallet[row]
        if wallet != 0.0:
            asset = balances.v_asset[row]
            parts.equity[asset] = wallet
            parts.scale[asset] = abs(wallet)
    rows = book.rows
    symbols = book.symbols
    for row in book.entity_rows(entity):
        sid = rows.v_symbol[row]
        contract = book.contracts[sid]
        assert contract is not None  # noqa: S101
        asset = book.margin_asset[sid]
        qcs, entry = rows.v_qcs[row], rows.v_entry[row]
        p = symbols.v_price[sid]
        if p != p:
            p = entry
        n = qcs * p
        t = bisect_right(contract.floors_f, n) - 1
        if t < 0:
            t = 0
        cum = contract.cum_f[t]
        parts.equity[asset] = parts.equity.get(asset, 0.0) + rows.v_sign[row] * qcs * (p - entry)
        parts.maintenance[asset] = parts.maintenance.get(asset, 0.0) + (n * contract.mmr_f[t] - cum)
        parts.scale[asset] = parts.scale.get(asset, 0.0) + qcs * (p + entry) + cum
        parts.rows.setdefault(asset, []).append(row)
    return parts


def breakdown(book: Book, entity: int) -> tuple[AssetView, ...]:
    """A pool by asset, for its events and state (floats; assets without a price yet show
    price 0)."""
    parts = pool_parts(book, entity)
    balances = book.balances
    wallets = {
        balances.v_asset[row]: balances.v_wallet[row]
        for row in book.balance_rows(book.entities.v_account[entity])
    }
    names = book.asset_names.names
    out = []
    for asset in sorted(set(parts.equity) | set(parts.maintenance), key=names.__getitem__):
        c = book.collateral.get(asset)
        equity = parts.equity.get(asset, 0.0)
        price = c.price_f if c is not None else 0.0
        keep = c.keep_f if c is not None else 1.0
        haircut = c.haircut_f if c is not None else 0.0
        value = equity * price * (keep if equity >= 0.0 else 1.0)
        out.append(AssetView(names[asset], wallets.get(asset, 0.0), equity, price, haircut, value))
    return tuple(out)


def needed_assets(book: Book, entity: int) -> set[int]:
    """The assets a pool must have a price for: nonzero wallets and positions' margin assets."""
    balances = book.balances
    needed = {
        balances.v_asset[row]
        for row in book.balance_rows(book.entities.v_account[entity])
        if balances.v_wallet[row] != 0.0 or balances.wallet_exact.get(row) != 0
    }
    symbol = book.rows.v_symbol
    needed.update(book.margin_asset[symbol[row]] for row in book.entity_rows(entity))
    return needed


def value_pool(
    book: Book, collateral: dict[int, Collateral], entity: int
) -> tuple[float, float, float] | None:
    """``(MB, MM, tolerance)`` of a pool in USD, or ``None`` while an asset it needs has no
    price (see the module docstring)."""
    parts = pool_parts(book, entity)
    for asset in needed_assets(book, entity):
        if asset not in collateral:
            return None
    mb = mm = scale = 0.0
    for asset, equity in parts.equity.items():
        c = collateral[asset]
        mb += equity * c.price_f * c.keep_f if equity >= 0.0 else equity * c.price_f
        scale += parts.scale[asset] * c.price_f
    for asset, maintenance in parts.maintenance.items():
        mm += maintenance * collateral[asset].price_f
    return mb, mm, scale * FLOAT_TOLERANCE


def pool_exact(
    book: Book, collateral: dict[int, Collateral], entity: int, exact_mark: ExactMark
) -> tuple[Fraction, Fraction]:
    """``(MB, MM)`` of a pool exactly (decimal arithmetic: pools hold linear positions only)."""
    add, mul, sub = UNBOUNDED.add, UNBOUNDED.multiply, UNBOUNDED.subtract
    equity: dict[int, Decimal] = {}
    maintenance: dict[int, Decimal] = {}
    balances = book.balances
    for row in book.balance_rows(book.entities.v_account[entity]):
        wallet = balances.wallet_exact.get(row)
        if wallet != 0:
            equity[balances.v_asset[row]] = wallet
    rows = book.rows
    for row in book.entity_rows(entity):
        sid = rows.v_symbol[row]
        contract = book.contracts[sid]
        assert contract is not None  # noqa: S101
        asset = book.margin_asset[sid]
        qty = rows.qty.get(row)
        entry = rows.entry_exact.get(row)
        mark = exact_mark(sid)
        price = entry if mark is None else mark
        qcs = mul(abs(qty), contract.contract_size)
        upnl = mul(qcs, sub(price, entry))
        gained = upnl if qty > 0 else UNBOUNDED.minus(upnl)  # exact (a bare minus rounds)
        equity[asset] = add(equity.get(asset, Decimal(0)), gained)
        n = mul(qcs, price)
        tier = contract.tiers[contract.tier_index_decimal(n)]
        maintenance[asset] = add(
            maintenance.get(asset, Decimal(0)), sub(mul(n, tier.mmr), tier.cum)
        )
    mb = Decimal(0)
    mm = Decimal(0)
    for asset, value in equity.items():
        c = collateral[asset]
        worth = mul(value, c.price)
        mb = add(mb, mul(worth, sub(Decimal(1), c.haircut)) if value >= 0 else worth)
    for asset, value in maintenance.items():
        mm = add(mm, mul(value, collateral[asset].price))
    return Fraction(mb), Fraction(mm)


def pool_loss(book: Book, collateral: dict[int, Collateral], entity: int) -> Fraction:
    """What a pool's owner loses to a liquidation: every positive wallet at its price, no
    haircut."""
    balances = book.balances
    loss = Decimal(0)
    for row in book.balance_rows(book.entities.v_account[entity]):
        wallet = balances.wallet_exact.get(row)
        if wallet > 0:
            loss = UNBOUNDED.add(
                loss, UNBOUNDED.multiply(wallet, collateral[balances.v_asset[row]].price)
            )
    return Fraction(loss)


def solve_pool_price(
    legs: Sequence[Leg],
    rest_equity: float,
    price: float,
    keep: float,
    constant: float,
    reference: float,
    *,
    with_maintenance: bool = True,
) -> float | None:
    """The mark of one symbol of a pool at which ``MB − MM = 0`` (``MB = 0`` without
    maintenance); see the module docstring.

    ``rest_equity``: the equity of the symbol's margin asset without these legs' uPnL (in the
    asset); ``price``/``keep``: that asset's USD price and ``1 − haircut``; ``constant``: every
    other asset's ``v_b(E_b)`` minus (with maintenance) every other position's ``MM`` in USD.
    """
    if not legs:
        return None
    # the equity of the asset is rest + a_u + b_u·P (linear legs): where it crosses zero
    a_u = sum(-leg.sign * leg.qcs * leg.entry_f for leg in legs)
    b_u = sum(leg.sign * leg.qcs for leg in legs)
    points = _breakpoints(legs) if with_maintenance else []
    if b_u != 0.0:
        zero = -(rest_equity + a_u) / b_u
        if 0.0 < zero < INF:
            points = sorted({*points, zero})
    edges = [0.0, *points, INF]
    pieces = len(edges) - 1
    coefficients: dict[int, tuple[float, float]] = {}

    def piece(i: int) -> tuple[float, float]:
        found = coefficients.get(i)
        if found is None:
            lo, hi = edges[i], edges[i + 1]
            probe = (lo + hi) / 2.0 if hi < INF else (lo * 2.0 if lo > 0.0 else 1.0)
            equity_a = rest_equity + a_u
            equity_b = b_u
            weight = price * keep if equity_a + equity_b * probe >= 0.0 else price
            a = constant + weight * equity_a
            b = weight * equity_b
            if with_maintenance:
                for leg in legs:
                    contract = leg.contract
                    t = contract.tier_index(leg.qcs * probe)
                    a += price * contract.cum_f[t]
                    b -= price * contract.mmr_f[t] * leg.qcs
            found = coefficients[i] = (a, b)
        return found

    def distance(i: int) -> float:
        lo, hi = edges[i], edges[i + 1]
        return lo - reference if reference < lo else (reference - hi if reference > hi else 0.0)

    candidates: list[tuple[float, int, float]] = []
    best = INF
    down = max(0, min(pieces - 1, bisect_right(edges, reference) - 1))
    up = down + 1
    while down >= 0 or up < pieces:
        near_down = distance(down) if down >= 0 else INF
        near_up = distance(up) if up < pieces else INF
        nearest = min(near_down, near_up)
        if nearest > best + 1e-11 * (abs(reference) + nearest):
            break
        if near_down <= near_up:
            i, down = down, down - 1
        else:
            i, up = up, up + 1
        lo, hi = edges[i], edges[i + 1]
        a, b = piece(i)
        if i > 0:  # a jump across zero at a tier floor (a discontinuous cum)
            pa, pb = piece(i - 1)
            left, right = pa + pb * lo, a + b * lo
            if (left < 0.0 < right) or (right < 0.0 < left):
                candidates.append((abs(lo - reference), 2 * i, lo))
                best = min(best, abs(lo - reference))
        if b == 0.0:
            continue
        root = -a / b
        if not root > 0.0 or root == INF:
            continue
        slack = 1e-12 * root
        if lo - slack <= root <= hi + slack:
            candidates.append((abs(root - reference), 2 * i + 1, root))
            best = min(best, abs(root - reference))
    if not candidates:
        return None
    return min(candidates)[2]


def scaled(threshold: Threshold, price: float, weight: float) -> Threshold:
    """The threshold on one symbol's terms of a pool: MM scaled by the asset's price, uPnL by
    the weight that bounds its effect on ``MB`` (see the module docstring)."""
    return Threshold(threshold.alpha * price, threshold.beta * weight, threshold.rising)


def weights(
    threshold: Threshold, equity: float, price: float, keep: float, b_u: float
) -> tuple[float, float]:
    """``(down, up)``: the uPnL weight on each side of the current mark. For a rising
    threshold, a gain counts at ``price·keep`` and a loss at ``price`` (the least ``MB`` can
    move); for a falling one, the slope at the current equity (the most)."""
    if not threshold.rising:
        slope = price * keep if equity >= 0.0 else price
        return slope, slope
    gain, loss = price * keep, price
    # moving up, the uPnL changes like b_u (the legs' net size)
    up = gain if b_u > 0.0 else loss
    down = loss if b_u > 0.0 else gain
    return down, up


def collateral_edge(
    threshold: Threshold, budget: float, pull: float, price: float
) -> tuple[float, float]:
    """The band of one collateral price: the asset's part of ``α·MM − β·MB`` is
    ``p·k`` with ``k = α·MM_a − β·w·E_a`` (``pull``; exactly linear in the price, as ``E_a`` is
    in units of the asset), so the band ends where ``(p' − p)·k`` uses up ``budget`` in the
    threshold's dangerous direction, at most a factor two away."""
    k = pull
    slack = budget
    lo, hi = price / 2.0, price * 2.0
    if k == 0.0:
        return lo, hi
    span = slack / abs(k)
    if (k > 0.0) == threshold.rising:  # a higher price is the dangerous way
        hi = min(hi, price + span)
    else:
        lo = max(lo, price - span)
    return lo, hi


__all__ = ["NONE", "Collateral", "PoolParts"]


def pool_bands(
    book: Book,
    entity: int,
    thresholds: Sequence[tuple[Threshold, float]],
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """The trigger bands of a pool: ``(row, lo, hi)`` on each marked row's symbol and
    ``(asset, lo, hi)`` on each held asset's collateral price (see the module docstring)."""
    from monitor.bands import SymbolCurve, _shrunk
    from monitor.views import leg_of, legs_by_symbol

    collateral = book.collateral
    parts = pool_parts(book, entity)
    symbols = book.symbols
    curves: list[tuple[SymbolCurve, int, list[int], float]] = []  # curve, asset, rows, b_u
    for sid, members in legs_by_symbol(book, entity).items():
        p = symbols.v_price[sid]
        if p != p:
            continue
        legs = [leg_of(book, row) for row in members]
        b_u = sum(leg.sign * leg.qcs for leg in legs)
        curves.append((SymbolCurve(str(sid), legs, p), book.margin_asset[sid], members, b_u))
    assets = sorted(set(parts.equity) | set(parts.maintenance))
    curve_bounds = [[0.0, INF] for _ in curves]
    asset_bounds = {a: [0.0, INF] for a in assets}
    for threshold, slack in thresholds:
        if slack <= 0.0:
            rows_out = [(r, c.price, c.price) for c, _, members, _ in curves for r in members]
            return rows_out, [(a, collateral[a].price_f, collateral[a].price_f) for a in assets]
        alpha, beta, rising = threshold.alpha, threshold.beta, threshold.rising
        sensitivity: dict[int, float] = {}
        pulls: dict[int, float] = {}  # G_a: the threshold's asset-unit term of a
        curve_sens: list[float] = []
        for curve, asset, _, _ in curves:
            c = collateral[asset]
            top = Threshold(alpha, beta, rising)  # the larger uPnL weight is 1 (no haircut)
            s = curve.sensitivity(top)
            curve_sens.append(s)
            sensitivity[asset] = sensitivity.get(asset, 0.0) + s
        for asset in assets:
            c = collateral[asset]
            equity = parts.equity.get(asset, 0.0)
            weight = c.keep_f if equity >= 0.0 else 1.0
            pulls[asset] = alpha * parts.maintenance.get(asset, 0.0) - beta * weight * equity
            sensitivity[asset] = c.price_f * (abs(pulls[asset]) + sensitivity.get(asset, 0.0))
        total = sum(sensitivity[a] for a in assets)
        budget = {
            a: slack * (sensitivity[a] / total if total > 0.0 else 1.0 / len(assets))
            for a in assets
        }
        reach: dict[int, float] = {}  # budget left for the marks of each asset, in units of it
        for asset in assets:
            c = collateral[asset]
            lo, hi = collateral_edge(threshold, budget[asset] / 2.0, pulls[asset], c.price_f)
            bounds = asset_bounds[asset]
            bounds[0], bounds[1] = max(bounds[0], lo), min(bounds[1], hi)
            reach[asset] = budget[asset] / 2.0 / hi
        for k, (curve, asset, _, b_u) in enumerate(curves):
            c = collateral[asset]
            share = curve_sens[k] / sensitivity_of(curves, curve_sens, asset)
            allowance = reach[asset] * share
            equity = parts.equity.get(asset, 0.0)
            down_w, up_w = weights(threshold, equity, 1.0, c.keep_f, b_u)
            bounds = curve_bounds[k]
            bounds[0] = max(
                bounds[0], curve.edge(Threshold(alpha, beta * down_w, rising), allowance, up=False)
            )
            bounds[1] = min(
                bounds[1], curve.edge(Threshold(alpha, beta * up_w, rising), allowance, up=True)
            )
    rows_out = []
    for (curve, _, members, _), (lo, hi) in zip(curves, curve_bounds, strict=True):
        lo, hi = _shrunk(curve.price, lo, hi)
        rows_out.extend((row, lo, hi) for row in members)
    assets_out = []
    for asset in assets:
        p = collateral[asset].price_f
        lo, hi = _shrunk(p, *asset_bounds[asset])
        assets_out.append((asset, lo, hi))
    return rows_out, assets_out


def sensitivity_of(
    curves: Sequence[tuple[object, int, list[int], float]], sens: list[float], asset: int
) -> float:
    """The summed sensitivity of the curves of one asset (1 when they have none, so a lone
    insensitive curve takes the whole allowance)."""
    total = sum(s for (_, a, _, _), s in zip(curves, sens, strict=True) if a == asset)
    return total if total > 0.0 else 1.0
