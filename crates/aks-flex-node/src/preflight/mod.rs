//! `aks-flex-node preflight`: named, read-only checks of the machine, the configuration and Azure (being built).
