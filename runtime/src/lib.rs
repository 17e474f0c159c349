//! Executes compiled cdp plans (the embedded batch engine, identity, streaming); lands with the runtime issues.
