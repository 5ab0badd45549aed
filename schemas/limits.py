"""Size limits a request is checked against before any work starts (values come from the
app's configuration; defaults are documented in README and openapi.yaml)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_T: int = 10_000
    max_H: int = 4_096
    max_D: int = 4_096
    max_N: int = 4_096
    max_B: int = 1_024                  # sequences in a batch
    max_bptt_terms: int = 4_000_000     # T^2 * H for b_h_terms / jacobian_norms
    max_work: float = 2e10              # estimated multiply-adds of one /v1/forward or /v1/gradients request
