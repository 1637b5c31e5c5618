"""Energy in the SNN literature's 45 nm convention (Horowitz, ISSCC 2014, as used by Spikformer,
SFA, Q-SNN and QP-SNN): a 32-bit float multiply-accumulate costs 4.6 pJ, an accumulate 0.9 pJ.
The SNN's first layer reads the image, not spikes, so it counts as MACs; every spike-driven
layer costs its SOPs as accumulates. The same network as an ANN costs all its MACs at 4.6 pJ."""

from __future__ import annotations

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def energy_45nm(layers: list[dict]) -> dict:
    snn = sum(r["macs"] * E_MAC_PJ if r["sops"] is None else r["sops"] * E_AC_PJ for r in layers)
    ann = sum(r["macs"] for r in layers) * E_MAC_PJ
    return {"energy_45nm_pj": snn, "energy_ann_45nm_pj": ann, "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ}
