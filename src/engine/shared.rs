//! Strings that many downloads share, held once: the scheduler slots (hosts and mirrors)
//! and the mirrors' base URLs. A queued download points at them instead of holding its own
//! copies (docs/design.md, "What a queued download costs").
//!
//! Entries are never removed: there is one per host or mirror the run has used, a few
//! hundred bytes each, however many downloads went to them.

use std::collections::HashSet;
use std::rc::Rc;

#[derive(Default)]
pub(crate) struct Shared {
    names: HashSet<Rc<str>>,
}

impl Shared {
    /// The one shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Rc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Rc<str> = name.into();
        self.names.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_name() {
        let mut shared = Shared::default();
        let a = shared.get("127.0.0.1:80");
        let b = shared.get(&String::from("127.0.0.1:80"));
        assert!(Rc::ptr_eq(&a, &b));
        assert!(!Rc::ptr_eq(&a, &shared.get("mirror http://m/")));
    }
}
