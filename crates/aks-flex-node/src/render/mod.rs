//! Pure renderers: configuration in, file contents out. No I/O here, so every rendered file is covered by
//! a golden test (`insta`) and the engine decides separately whether anything needs writing.

pub mod cni;
pub mod containerd;
pub mod kubelet;
pub mod npd;
pub mod system;
