"""Spiking networks with state over real timesteps: torch neurons trained by BPTT whose eval forward is
the IR's integer program (neurons, model), their training loop (train) and their export to a temporal
IR graph (export). docs/temporal.md describes the arithmetic."""
