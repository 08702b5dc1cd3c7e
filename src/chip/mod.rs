//! The emulated SRAM-only machine: hardware description, placement, cost.
