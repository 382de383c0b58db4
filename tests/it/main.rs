//! The integration tests: one binary (link once), one module per area.

mod layers;
