"""GPU kernels for the SUS attention op (Triton). `dispatch` picks them or says None."""
