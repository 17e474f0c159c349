//! Checks a cdp project and lowers it for the back ends.
