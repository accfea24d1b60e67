//! The engine's requests, one module per family, each an `impl Engine` block.

mod transactions;
