//! Property tests: a client and a server connection wired back to back.

use std::time::Instant;

use palisade_proto::connection::{Connection, Event, ProtocolConfig};
use palisade_proto::message::Message;
use proptest::prelude::*;

use crate::harness::seeded_masks;

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,300}".prop_map(Message::text),
        prop::collection::vec(any::<u8>(), 0..70_000).prop_map(Message::binary),
    ]
}

/// Moves everything `from` transmits into `to`, cut at the given points.
fn pipe(from: &mut Connection, to: &mut Connection, cuts: &[usize]) -> Vec<Event> {
    let mut wire = Vec::new();
    while let Some(chunk) = from.poll_transmit() {
        wire.extend_from_slice(&chunk);
    }
    let mut events = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    for end in points {
        to.handle_bytes(&wire[start..end]);
        start = end;
        while let Some(e) = to.poll_event() {
            events.push(e.expect("valid traffic never fails"));
        }
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_messages_any_split_round_trip(
        to_server in prop::collection::vec(message(), 0..8),
        to_client in prop::collection::vec(message(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let now = Instant::now();
        let config = ProtocolConfig::default().with_keepalive(None, None);
        let mut client = Connection::client(config.clone(), seeded_masks(3), now);
        let mut server = Connection::server(config, now);
        for m in &to_server {
            client.send(m).unwrap();
        }
        for m in &to_client {
            server.send(m).unwrap();
        }
        let got_server: Vec<Event> = pipe(&mut client, &mut server, &cuts);
        let got_client: Vec<Event> = pipe(&mut server, &mut client, &cuts);
        let expect = |ms: &[Message]| ms.iter().cloned().map(Event::Message).collect::<Vec<_>>();
        prop_assert_eq!(got_server, expect(&to_server));
        prop_assert_eq!(got_client, expect(&to_client));
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        server: bool,
    ) {
        let now = Instant::now();
        let config = ProtocolConfig::default().with_max_message_size(4096).with_max_frame_size(4096);
        let mut conn = if server {
            Connection::server(config, now)
        } else {
            Connection::client(config, seeded_masks(5), now)
        };
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut start = 0;
        for end in points {
            conn.handle_bytes(&bytes[start..end]);
            start = end;
            while conn.poll_event().is_some() {}
            while conn.poll_transmit().is_some() {}
        }
        conn.handle_eof();
        while conn.poll_event().is_some() {}
        prop_assert!(conn.pending_transmit() == 0);
    }
}
