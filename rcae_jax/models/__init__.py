"""The three networks: RcAE (stage 1), DPN (stage 2), CRD (stage 3)."""
