//! Test harness: starts real SoftHSM tokens, scheme-sim and vaultd processes.
