//! The one way actions hold clients: built once per target for the life of the process and
//! shared by every call to that target, because building one is not free (reading a
//! kubeconfig, loading the AWS credential chain).

use std::sync::Mutex;

/// Clients by the target they reach.
pub struct Clients<K, C> {
    held: Mutex<Vec<(K, C)>>,
}

impl<K: PartialEq, C: Clone> Clients<K, C> {
    pub const fn new() -> Self {
        Clients {
            held: Mutex::new(Vec::new()),
        }
    }

    /// The client already built for `target`.
    pub fn get(&self, target: &K) -> Option<C> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == target)
            .map(|(_, c)| c.clone())
    }

    /// Keeps `client` for `target` and returns it.
    pub fn keep(&self, target: K, client: C) -> C {
        let mut held = self.held.lock().unwrap();
        held.retain(|(k, _)| *k != target);
        held.push((target, client.clone()));
        client
    }

    /// Drops the client of `target` (it stopped answering).
    pub fn forget(&self, target: &K) {
        self.held.lock().unwrap().retain(|(k, _)| k != target);
    }
}
