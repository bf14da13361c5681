//! The harness itself, on a toy peer that pings its neighbours on a timer: partitions cut
//! and heal, seeded loss repeats, capture keeps delivery order, the clock jumps to the next
//! input, and each behaviour does what it says.
#![allow(clippy::unwrap_used)]

use overlay::driver::{self, Core};
use overlay::{Contact, Message, NodeId, Time, Transmit};
use std::time::Duration;
use testkit::adversary::{self, Action};
use testkit::{Link, Network, Peer};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

/// Pings every other peer each `every`, answers pings with pongs; reports each pong and each
/// ping that could not be sent.
struct Pinger {
    me: NodeId,
    others: Vec<NodeId>,
    every: Duration,
    next: Time,
    token: u64,
    out: Vec<Transmit>,
    events: Vec<Heard>,
}

#[derive(Debug, PartialEq)]
enum Heard {
    Pong { from: NodeId, token: u64 },
    NotSent { to: NodeId },
}

impl Pinger {
    fn new(me: NodeId, every_ms: u64) -> Pinger {
        Pinger {
            me,
            others: [A, B, C].into_iter().filter(|p| *p != me).collect(),
            every: Duration::from_millis(every_ms),
            next: Time::ZERO,
            token: 0,
            out: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Peer for Pinger {
    fn contact(&self) -> Contact {
        Contact::id_only(self.me)
    }
}

impl Core for Pinger {
    type Event = Heard;

    fn handle_message(&mut self, _now: Time, from: &driver::Peer, msg: Message) {
        let from = from.contact;
        match msg {
            Message::Ping { token } => self.out.push(Transmit {
                to: from,
                msg: Message::Pong { token },
            }),
            Message::Pong { token } => self.events.push(Heard::Pong {
                from: from.id,
                token,
            }),
            _ => {}
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        for to in &self.others {
            self.token += 1;
            self.out.push(Transmit {
                to: Contact::id_only(*to),
                msg: Message::Ping { token: self.token },
            });
        }
        self.next = now + self.every;
    }
    fn handle_not_sent(&mut self, _now: Time, to: NodeId, _msg: &Message) {
        self.events.push(Heard::NotSent { to });
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }
    fn poll_event(&mut self) -> Option<Heard> {
        self.events.pop()
    }
    fn poll_timeout(&self) -> Option<Time> {
        Some(self.next)
    }
    fn leave(&mut self, _now: Time) {}
}

fn three(every_ms: u64, seed: u64) -> Network<Pinger> {
    Network::new(
        [A, B, C].map(|p| Pinger::new(p, every_ms)),
        Time::ZERO,
        seed,
    )
}

/// Frames delivered between `x` and `y` (either way) in `[from, to)`.
fn between(net: &Network<Pinger>, x: NodeId, y: NodeId, from: Time, to: Time) -> usize {
    net.captured()
        .iter()
        .filter(|f| f.at >= from && f.at < to)
        .filter(|f| (f.from.id, f.to) == (x, y) || (f.from.id, f.to) == (y, x))
        .count()
}

#[test]
fn a_partition_drops_frames_across_it_and_heals() {
    let mut net = three(10, 1);
    net.run_for(Duration::from_millis(100));
    assert!(between(&net, A, B, Time::ZERO, net.now()) > 0);
    let cut = net.now();
    net.partition([A], [B, C]);
    net.run_for(Duration::from_millis(100));
    let healed = net.now();
    assert_eq!(between(&net, A, B, cut, healed), 0);
    assert_eq!(between(&net, A, C, cut, healed), 0);
    assert!(between(&net, B, C, cut, healed) > 0, "B and C are one side");
    assert!(net.lost() > 0);
    net.heal();
    net.run_for(Duration::from_millis(100));
    assert!(between(&net, A, B, healed, net.now()) > 0);
    assert!(between(&net, A, C, healed, net.now()) > 0);
}

#[test]
fn loss_with_a_seed_is_reproducible() {
    let run = |seed| {
        let mut net = three(10, seed);
        net.set_default_link(Link {
            latency: Duration::from_millis(1),
            loss: 0.3,
        });
        net.run_for(Duration::from_secs(1));
        (net.captured().to_vec(), net.lost())
    };
    let (frames, lost) = run(7);
    assert!(lost > 50 && !frames.is_empty(), "{lost} lost");
    assert_eq!(run(7), (frames.clone(), lost), "same seed, same run");
    assert_ne!(run(8).0, frames, "another seed loses other frames");
}

#[test]
fn capture_records_in_delivery_order_with_each_links_latency() {
    let mut net = three(10, 1);
    let slow = Link {
        latency: Duration::from_millis(7),
        loss: 0.0,
    };
    net.set_link(A, B, slow);
    net.run_for(Duration::from_millis(200));
    let frames = net.captured();
    assert!(frames.windows(2).all(|w| w[0].at <= w[1].at));
    for f in frames {
        let want = if (f.from.id, f.to) == (A, B) { 7 } else { 1 };
        assert_eq!(f.at - f.sent, Duration::from_millis(want), "{f:?}");
    }
    // A's first ping to B (7 ms) is captured after C's pong to A's first ping (1 + 1 ms).
    let first_a_to_b = frames.iter().position(|f| (f.from.id, f.to) == (A, B));
    let first_c_to_a = frames.iter().position(|f| (f.from.id, f.to) == (C, A));
    assert!(first_c_to_a < first_a_to_b);
}

#[test]
fn the_clock_jumps_to_the_next_input() {
    let mut net = three(1000, 1);
    let mut times = Vec::new();
    while net.step_until(Time::from_millis(2500)) {
        times.push(net.now());
    }
    times.dedup();
    // Timers at 0, 1 s, 2 s; pings arrive 1 ms later, pongs 2 ms later.
    let ms = |m| Time::from_millis(m);
    assert_eq!(
        times,
        vec![
            ms(0),
            ms(1),
            ms(2),
            ms(1000),
            ms(1001),
            ms(1002),
            ms(2000),
            ms(2001),
            ms(2002)
        ]
    );
    net.run_until(ms(2500));
    assert_eq!(net.now(), ms(2500));
}

fn pongs(net: &Network<Pinger>, at: NodeId, from: NodeId) -> usize {
    net.events()
        .iter()
        .filter(|(id, e)| *id == at && matches!(e, Heard::Pong { from: f, .. } if *f == from))
        .count()
}

fn is_ping(_me: NodeId, _to: NodeId, m: &Message) -> bool {
    matches!(m, Message::Ping { .. })
}

#[test]
fn behaviours_drop_modify_misroute_replay_and_bounce() {
    let ping_to_b = |_me: NodeId, to: NodeId, m: &Message| to == B && is_ping(_me, to, m);

    // Drop: A's pings to B vanish, those to C do not.
    let mut net = three(100, 1);
    net.set_behaviour(A, adversary::drop_if(ping_to_b));
    net.run_for(Duration::from_millis(450));
    assert_eq!(pongs(&net, A, B), 0);
    assert_eq!(pongs(&net, A, C), 5);

    // Modify: B answers a token A never sent.
    let mut net = three(100, 1);
    net.set_behaviour(
        B,
        adversary::modify_if(
            |_, to, m| to == A && matches!(m, Message::Pong { .. }),
            |m| *m = Message::Pong { token: 999 },
        ),
    );
    net.run_for(Duration::from_millis(50));
    assert!(net.events().iter().any(|(id, e)| *id == A
        && *e
            == Heard::Pong {
                from: B,
                token: 999
            }));

    // Misroute: A's pings to B go to C, which answers them.
    let mut net = three(100, 1);
    net.set_behaviour(A, adversary::misroute_if(ping_to_b, C));
    net.run_for(Duration::from_millis(450));
    assert_eq!(pongs(&net, A, B), 0);
    assert_eq!(pongs(&net, A, C), 10);

    // Replay: each of A's pings reaches its peer three times.
    let mut net = three(100, 1);
    net.set_behaviour(A, adversary::replay_if(is_ping, 2));
    net.run_for(Duration::from_millis(450));
    assert_eq!(pongs(&net, A, B), 15);

    // Bounce: the link A→B is full; A hears its pings were not sent.
    let mut net = three(100, 1);
    net.set_behaviour(A, adversary::bounce_if(ping_to_b));
    net.run_for(Duration::from_millis(450));
    assert_eq!(pongs(&net, A, B), 0);
    let not_sent = net
        .events()
        .iter()
        .filter(|(id, e)| *id == A && *e == Heard::NotSent { to: B })
        .count();
    assert_eq!(not_sent, 5);

    // A closure is a behaviour too; clearing it makes the peer honest again.
    let mut net = three(100, 1);
    net.set_behaviour(A, |_now, _me, _to, _msg| Vec::<Action>::new());
    net.run_for(Duration::from_millis(50));
    assert_eq!(pongs(&net, A, B) + pongs(&net, A, C), 0);
    net.clear_behaviour(A);
    net.run_for(Duration::from_millis(100));
    assert_eq!(pongs(&net, A, B), 1);
}

#[test]
fn deliver_and_inject_act_as_a_compromised_peer() {
    let mut net = three(1000, 1);
    // Delivered at once, captured, answered.
    assert!(net.deliver(C, B, Message::Ping { token: 77 }));
    assert_eq!(
        net.captured().last().unwrap().msg,
        Message::Ping { token: 77 }
    );
    assert_eq!(net.in_flight().count(), 1, "B's pong to C");
    // A frame to a peer that does not exist is lost.
    assert!(!net.deliver(C, NodeId(9), Message::Ping { token: 1 }));
    // Injected: on the wire like any frame.
    net.inject(C, A, Message::Ping { token: 78 });
    net.run_for(Duration::from_millis(5));
    assert!(
        net.events()
            .iter()
            .any(|(id, e)| *id == C && *e == Heard::Pong { from: A, token: 78 })
    );
}
