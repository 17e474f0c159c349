//! The registry of definition versions, feature values and statistics; lands with the registry issue.
