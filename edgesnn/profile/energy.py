"""Energy in the SNN literature's 45 nm convention (Horowitz, ISSCC 2014, as used by Spikformer,
SFA, Q-SNN and QP-SNN): a 32-bit float multiply-accumulate costs 4.6 pJ, an accumulate 0.9 pJ.
The SNN's first layer reads the image, not spikes, so it counts as MACs; every spike-driven
layer costs its SOPs as accumulates, SOPs counted in the spike code the network deploys with
(rate-burst: one per spike of s; bit-plane: one per set bit of s). A product of two activations
is spike-driven only when both operands are spikes (one accumulate per pair of spikes, see
:mod:`.ops`), else all its MACs count. The same network as an ANN costs all its MACs at 4.6 pJ."""

from __future__ import annotations

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
SOURCE = ("Horowitz, ISSCC 2014, 45 nm: a 32-bit float MAC 4.6 pJ, an accumulate 0.9 pJ; the convention of "
          "Spikformer, SFA, Q-SNN and QP-SNN")
CONVENTION = ("operations counted on the data × fixed 45 nm figures: it compares networks with one another, "
              "not with a chip, and is not what any board draws")


def energy_45nm(layers: list[dict]) -> dict:
    """Energy of the layers' ``sops`` (their code's); with per-code SOPs (``sops_by_code``), also
    ``energy_45nm_pj_by_code``, the energy each code would cost."""
    snn = sum(r["macs"] * E_MAC_PJ if r["sops"] is None else r["sops"] * E_AC_PJ for r in layers)
    ann = sum(r["macs"] for r in layers) * E_MAC_PJ
    out = {"energy_45nm_pj": snn, "energy_ann_45nm_pj": ann, "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ}
    codes = next((list(r["sops_by_code"]) for r in layers if r.get("sops_by_code")), [])
    if codes:
        out["energy_45nm_pj_by_code"] = {
            code: sum(r["macs"] * E_MAC_PJ if r.get("sops_by_code") is None else r["sops_by_code"][code] * E_AC_PJ
                      for r in layers) for code in codes}
    return out


# ---- a CPU board's own latency and energy ---------------------------------------------------------

# How a board's device tree names it (/sys/firmware/devicetree/base/model, edgesnn.device.machine_model):
# a run is the board's own only where the name starts with one of these.
BOARD_MODELS = {"raspberry-pi-4": ("Raspberry Pi 4 ", "Raspberry Pi 400", "Raspberry Pi Compute Module 4"),
                "raspberry-pi-5": ("Raspberry Pi 5 ", "Raspberry Pi 500", "Raspberry Pi Compute Module 5"),
                "jetson-orin-nano": ("NVIDIA Jetson Orin Nano",), "jetson-nano": ("NVIDIA Jetson Nano",)}
METHODS = {"power-sensor": "the board's power sensor, mean power x the latency, both measured on the board",
           "board-latency x board-power": "latency measured on the board x its active power from its board file",
           "host-latency x board-power": "latency measured on another machine x the board's active power from its "
                                         "board file"}


def on_board(board, r: dict) -> bool:
    """Whether profile --measure's result ``r`` was measured on ``board`` itself: the machine's device tree names
    it (``machine_model``), not under an emulator; ``host`` is whatever machine edgesnn runs on."""
    if r.get("emulated"):
        return False
    if board.kind == "host":
        return True
    model = r.get("machine_model") or ""
    return any(model.startswith(name) for name in BOARD_MODELS.get(board.name, ()))


def cpu_board(board, r: dict) -> dict:
    """A CPU board's latency and energy per inference (profile's ``r``, with --measure's keys), each the board's
    own only from a run on it, else an estimate labelled with its method and the machine it ran on:

    - ``latency_board_ms``: the median latency where it was measured on the board, else None (``latency_board_note``
      says why);
    - ``energy_board_pj`` and ``energy_board_method`` (a key of :data:`METHODS`): on the board, its power sensor
      (a measurement), else its board file's active power x the latency; elsewhere that power x this machine's
      latency; ``energy_board_estimate`` (False only for the sensor), ``energy_board_host`` (where the latency
      ran) and ``energy_board_note`` (one line saying all that)."""
    e = {"energy_board_pj": None, "energy_board_method": None, "energy_board_estimate": None,
         "energy_board_host": None, "latency_board_ms": None}
    if "latency_ms_median" not in r:
        e["latency_board_note"] = "not measured: run edgesnn profile --measure on the board"
        e["energy_board_note"] = ("run with --measure for a latency" if board.active_power_w is not None
                                  else f"{board.name} has no active power in its board file")
        return e
    lat, watts = r["latency_ms_median"], board.active_power_w
    host = r.get("measured_on") or "this machine"
    if r.get("emulated"):
        host += f", under {r['emulated']}"
    e["energy_board_host"] = host
    if on_board(board, r):
        e["latency_board_ms"] = lat
        e["latency_board_note"] = f"measured on {board.name} ({r.get('machine_model') or host})"
        if "power_w_mean" in r:
            e.update(energy_board_pj=r["power_w_mean"] * lat * 1e9, energy_board_method="power-sensor",
                     energy_board_estimate=False)
            e["energy_board_note"] = (f"measured on {board.name} ({host}): power sensor {r.get('power_sensor')}, "
                                      f"mean {r['power_w_mean']:.3g} W x latency {lat:.4g} ms")
            return e
        method, where = "board-latency x board-power", f"on {board.name} ({host}), which has no power sensor here"
    else:
        e["latency_board_note"] = (f"not measured on {board.name}: the latency was measured on {host}; run edgesnn "
                                   f"profile --measure on {board.name} (pip install 'edgesnn[device]') for its own")
        method, where = "host-latency x board-power", f"on {host}, not on {board.name}"
    e.update(energy_board_method=method, energy_board_estimate=True)
    if watts is None:
        e["energy_board_note"] = f"{board.name} has no active power in its board file"
        return e
    e["energy_board_pj"] = lat * 1e-3 * watts * 1e12
    e["energy_board_note"] = (f"estimate ({method}): latency {lat:.4g} ms measured {where}, x {board.name}'s "
                              f"active power {watts:.3g} W from its board file")
    return e
