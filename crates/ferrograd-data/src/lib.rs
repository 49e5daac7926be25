//! Data for ferrograd: built-in synthetic data sets that need no download.

pub mod synthetic;
