"""Models (BiCLUM, scMDCF), their losses and the shared training utilities."""
