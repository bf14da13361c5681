//! A list of contacts stored as bare Node-IDs, with a side table for the few that carry a
//! socket address.
//!
//! A [`Contact`] takes 48 bytes, 32 of them for an optional socket address that simulated
//! peers never have and runtime peers have for only a handful of entries. The successor
//! list and the fingers are read by every routing step, and a large simulation is bound by
//! the cache lines it reads: as 16-byte IDs an eight-entry successor list takes two lines
//! instead of six, and at 10^7 simulated peers the lists take gigabytes less.

use crate::{Contact, NodeId};
use std::net::SocketAddr;

/// Contacts in order, each ID at most once in the address table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Contacts {
    /// The entries, in the owner's order.
    ids: Vec<NodeId>,
    /// Addresses of the entries that have one; only entries of `ids` appear here.
    addrs: Vec<(NodeId, SocketAddr)>,
}

impl Contacts {
    /// A list of `contacts`, in their order.
    pub(crate) fn from_contacts(contacts: impl IntoIterator<Item = Contact>) -> Self {
        let mut list = Contacts::default();
        for c in contacts {
            list.push(c);
        }
        list
    }

    /// The entries' Node-IDs, in order.
    pub(crate) fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The entry `id` as a contact (with its address, if it has one).
    pub(crate) fn contact(&self, id: NodeId) -> Contact {
        let addr = if self.addrs.is_empty() {
            None
        } else {
            self.addrs.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
        };
        Contact { id, addr }
    }

    pub(crate) fn get(&self, i: usize) -> Option<Contact> {
        self.ids.get(i).map(|id| self.contact(*id))
    }

    pub(crate) fn first(&self) -> Option<Contact> {
        self.get(0)
    }

    pub(crate) fn last(&self) -> Option<Contact> {
        self.ids.last().map(|id| self.contact(*id))
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = Contact> + '_ {
        self.ids.iter().map(|id| self.contact(*id))
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn position(&self, id: NodeId) -> Option<usize> {
        self.ids.iter().position(|i| *i == id)
    }

    /// The entries as contacts (for a message that carries the list).
    pub(crate) fn to_vec(&self) -> Vec<Contact> {
        self.iter().collect()
    }

    /// Remember `c`'s address (or that it has none).
    fn set_addr(&mut self, c: Contact) {
        if c.addr.is_none() && self.addrs.is_empty() {
            return;
        }
        self.addrs.retain(|(i, _)| *i != c.id);
        if let Some(a) = c.addr {
            self.addrs.push((c.id, a));
        }
    }

    /// Drop addresses of entries that are gone.
    fn prune_addrs(&mut self) {
        if !self.addrs.is_empty() {
            let ids = &self.ids;
            self.addrs.retain(|(i, _)| ids.contains(i));
        }
    }

    pub(crate) fn push(&mut self, c: Contact) {
        self.ids.push(c.id);
        self.set_addr(c);
    }

    pub(crate) fn insert(&mut self, i: usize, c: Contact) {
        self.ids.insert(i, c.id);
        self.set_addr(c);
    }

    /// Remove the entry at `i` (and its address).
    pub(crate) fn remove(&mut self, i: usize) {
        if i < self.ids.len() {
            let id = self.ids.remove(i);
            self.addrs.retain(|(a, _)| *a != id);
        }
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        self.prune_addrs();
    }

    /// Keep the entries whose ID `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(NodeId) -> bool) {
        self.ids.retain(|id| keep(*id));
        self.prune_addrs();
    }

    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.addrs.clear();
    }

    /// Give back spare capacity (a converged start sizes the list once).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.addrs.shrink_to_fit();
    }

    /// A word from each cache line of the list (see [`super::ChordNode::touch_lists`]).
    pub(crate) fn touch(&self) -> u64 {
        let mut x = 0;
        for id in self.ids.iter().step_by(4) {
            x ^= id.0 as u64;
        }
        x
    }

    /// The list's own fields, not its heap (see [`super::ChordNode::touch_fields`]).
    pub(crate) fn touch_fields(&self) -> u64 {
        (self.ids.len() ^ self.addrs.len()) as u64
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<NodeId>()
            + self.addrs.capacity() * std::mem::size_of::<(NodeId, SocketAddr)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn contacts_keep_their_order_and_addresses_through_edits() {
        let a = Contact::new(NodeId(1), addr(1001));
        let b = Contact::id_only(NodeId(2));
        let c = Contact::new(NodeId(3), addr(1003));
        let mut l = Contacts::from_contacts([a, b]);
        l.insert(0, c);
        assert_eq!(l.to_vec(), vec![c, a, b]);
        l.retain(|id| id != NodeId(1));
        assert_eq!(l.to_vec(), vec![c, b]);
        l.truncate(1);
        assert_eq!(l.to_vec(), vec![c]);
        assert_eq!(
            l.addrs.len(),
            1,
            "addresses of dropped entries go with them"
        );
        // A contact seen again without its address forgets the old one.
        l.push(Contact::id_only(NodeId(3)));
        assert_eq!(l.get(1), Some(Contact::id_only(NodeId(3))));
        assert_eq!(l.first(), Some(Contact::id_only(NodeId(3))));
    }
}
