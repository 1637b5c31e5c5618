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
