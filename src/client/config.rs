//! Client configuration: coordinator URL, wallet URL, token, timeouts. (Being built: see issue 3.)

/// How to reach the coordinator.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {}
