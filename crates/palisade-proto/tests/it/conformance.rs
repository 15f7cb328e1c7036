//! RFC 6455 conformance, organised like the Autobahn|Testsuite's sections 1–10 and written from
//! the RFC. Each section runs against the server role and, where the rule is symmetric, the
//! client role too.

use std::time::Duration;

use palisade_proto::connection::{Event, ProtocolConfig};
use palisade_proto::error::{
    CloseCode, CloseFrame, Error, PayloadTooBig, ProtocolError, SizeLimit, State,
};
use palisade_proto::frame::OpCode;
use palisade_proto::message::Message;

use crate::harness::Harness;

fn both() -> [Harness; 2] {
    [Harness::server(), Harness::client()]
}

fn text(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(Message::Text(t)) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

fn protocol_error(err: &Error) -> ProtocolError {
    match err {
        Error::Protocol(p) => *p,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Section 1: framing — text and binary messages of every length form.
mod framing {
    use super::*;

    #[test]
    fn text_and_binary_of_every_length_form() {
        for mut h in both() {
            for len in [0usize, 1, 125, 126, 127, 128, 65535, 65536, 100_000] {
                let payload = "*".repeat(len);
                h.send_text(&payload);
                let payload_bin = vec![0xFE; len];
                h.send_frame(true, 0x2, &payload_bin);
                let events = h.ok_events();
                assert_eq!(
                    events,
                    vec![
                        Event::Message(Message::text(payload)),
                        Event::Message(Message::binary(payload_bin))
                    ],
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn input_one_byte_at_a_time() {
        for mut h in both() {
            let mut wire = h.frame(true, 0, 0x1, "Hello, wörld".as_bytes());
            wire.extend(h.frame(true, 0, 0x2, &[1u8; 300]));
            let mut events = Vec::new();
            for b in &wire {
                h.conn.handle_bytes(std::slice::from_ref(b));
                events.extend(h.ok_events());
            }
            assert_eq!(
                events,
                vec![
                    Event::Message(Message::text("Hello, wörld")),
                    Event::Message(Message::binary(vec![1u8; 300]))
                ]
            );
        }
    }

    #[test]
    fn masking_direction_is_enforced() {
        // A server refuses an unmasked frame; a client refuses a masked one (RFC 6455 §5.1).
        let mut s = Harness::server();
        s.conn.handle_bytes(&[0x81, 0x02, b'h', b'i']);
        let err = s.assert_failed_with(CloseCode::PROTOCOL_ERROR);
        assert_eq!(protocol_error(&err), ProtocolError::UnmaskedClientFrame);

        let mut c = Harness::client();
        c.conn.handle_bytes(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let err = c.assert_failed_with(CloseCode::PROTOCOL_ERROR);
        assert_eq!(protocol_error(&err), ProtocolError::MaskedServerFrame);
    }

    #[test]
    fn what_we_send_is_masked_by_clients_only() {
        for (mut h, masked) in [(Harness::server(), false), (Harness::client(), true)] {
            h.conn.send(&Message::text("hi")).unwrap();
            h.conn.send(&Message::binary(vec![7u8; 70_000])).unwrap();
            let sent = h.sent_frames();
            assert_eq!(sent.len(), 2);
            assert!(sent.iter().all(|f| f.header.mask.is_some() == masked));
            assert_eq!(sent[0].payload, b"hi");
            assert_eq!(sent[1].payload, vec![7u8; 70_000]);
            assert_eq!(h.conn.pending_transmit(), 0);
        }
    }
}

/// Section 2: pings and pongs.
mod pings {
    use super::*;

    #[test]
    fn ping_is_answered_with_the_same_payload() {
        for mut h in both() {
            for payload in [&b""[..], b"hello", &[0xFFu8; 125][..], &[0, 1, 2, 0xFE][..]] {
                h.send_frame(true, 0x9, payload);
                assert_eq!(h.ok_events(), vec![Event::Ping(payload.to_vec().into())]);
                let sent = h.sent_frames();
                assert_eq!(sent.len(), 1);
                assert_eq!(sent[0].header.opcode, OpCode::Pong);
                assert_eq!(sent[0].payload, payload);
            }
        }
    }

    #[test]
    fn ten_pings_get_ten_pongs_in_order() {
        for mut h in both() {
            for i in 0..10u8 {
                h.send_frame(true, 0x9, &[i]);
            }
            assert_eq!(h.ok_events().len(), 10);
            let pongs: Vec<Vec<u8>> = h.sent_frames().into_iter().map(|f| f.payload).collect();
            assert_eq!(pongs, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
        }
    }

    #[test]
    fn ping_over_125_bytes_fails_from_its_header() {
        for mut h in both() {
            h.send_frame(true, 0x9, &[0; 126]);
            let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
            assert_eq!(protocol_error(&err), ProtocolError::ControlFrameTooLong { len: 126 });
        }
    }

    #[test]
    fn unsolicited_pong_is_accepted() {
        for mut h in both() {
            h.send_frame(true, 0xA, b"unsolicited");
            h.send_text("after");
            let events = h.ok_events();
            assert_eq!(events[0], Event::Pong(b"unsolicited".to_vec().into()));
            assert_eq!(text(&events), ["after"]);
            assert!(h.sent_frames().is_empty());
        }
    }

    #[test]
    fn ping_payload_limit_applies_to_our_pings_too() {
        let mut h = Harness::server();
        assert!(matches!(h.conn.ping(&[0; 126]), Err(Error::PayloadTooBig(_))));
        h.conn.ping(&[0; 125]).unwrap();
        h.conn.pong(b"beat").unwrap();
        let sent = h.sent_frames();
        assert_eq!(sent[0].header.opcode, OpCode::Ping);
        assert_eq!(sent[1].header.opcode, OpCode::Pong);
    }
}

/// Section 3: reserved bits.
mod reserved_bits {
    use super::*;

    #[test]
    fn any_rsv_bit_without_extension_fails() {
        for rsv in 1..8u8 {
            for opcode in [0x1u8, 0x2, 0x9] {
                for mut h in both() {
                    h.send_text("before");
                    let f = h.frame(true, rsv, opcode, b"x");
                    h.conn.handle_bytes(&f);
                    let events = h.events();
                    assert_eq!(
                        events[0].as_ref().unwrap(),
                        &Event::Message(Message::text("before"))
                    );
                    let err = events[1].as_ref().unwrap_err();
                    assert_eq!(protocol_error(err), ProtocolError::ReservedBits { bits: rsv });
                    h.assert_sent_close(CloseCode::PROTOCOL_ERROR);
                }
            }
        }
    }
}

/// Section 4: opcodes.
mod opcodes {
    use super::*;

    #[test]
    fn reserved_opcodes_fail() {
        for op in (3..=7u8).chain(11..=15) {
            for mut h in both() {
                h.send_text("before");
                h.send_frame(true, op, b"payload");
                h.send_text("after");
                let events = h.events();
                assert_eq!(text(&[events[0].as_ref().unwrap().clone()]), ["before"]);
                assert_eq!(
                    protocol_error(events[1].as_ref().unwrap_err()),
                    ProtocolError::ReservedOpcode { opcode: op }
                );
                assert_eq!(events.len(), 2, "nothing after the failure");
                h.assert_sent_close(CloseCode::PROTOCOL_ERROR);
            }
        }
    }
}

/// Section 5: fragmentation.
mod fragmentation {
    use super::*;

    #[test]
    fn fragmented_text_with_interleaved_pings() {
        for mut h in both() {
            h.send_frame(false, 0x1, b"frag");
            h.send_frame(true, 0x9, b"p1");
            h.send_frame(false, 0x0, b"men");
            h.send_frame(true, 0x9, b"p2");
            h.send_frame(true, 0x0, b"ted");
            let events = h.ok_events();
            assert_eq!(
                events,
                vec![
                    Event::Ping(b"p1".to_vec().into()),
                    Event::Ping(b"p2".to_vec().into()),
                    Event::Message(Message::text("fragmented")),
                ]
            );
            assert_eq!(h.sent_frames().len(), 2, "both pings answered");
        }
    }

    #[test]
    fn many_empty_fragments() {
        for mut h in both() {
            h.send_frame(false, 0x2, b"");
            for _ in 0..100 {
                h.send_frame(false, 0x0, b"");
            }
            h.send_frame(true, 0x0, b"end");
            assert_eq!(h.ok_events(), vec![Event::Message(Message::binary(&b"end"[..]))]);
        }
    }

    #[test]
    fn fragmented_control_frames_fail() {
        for op in [0x8u8, 0x9, 0xA] {
            for mut h in both() {
                h.send_frame(false, op, b"");
                let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
                assert_eq!(protocol_error(&err), ProtocolError::FragmentedControlFrame);
            }
        }
    }

    #[test]
    fn continuation_without_a_message_fails() {
        for fin in [true, false] {
            for mut h in both() {
                h.send_frame(fin, 0x0, b"orphan");
                let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
                assert_eq!(protocol_error(&err), ProtocolError::UnexpectedContinuation);
            }
        }
    }

    #[test]
    fn new_message_inside_a_fragmented_one_fails() {
        for mut h in both() {
            h.send_frame(false, 0x1, b"start");
            h.send_frame(true, 0x1, b"again");
            let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
            assert_eq!(protocol_error(&err), ProtocolError::MissingContinuation);
        }
    }

    #[test]
    fn continuation_after_a_complete_message_fails() {
        for mut h in both() {
            h.send_text("done");
            h.send_frame(true, 0x0, b"more");
            let events = h.events();
            assert_eq!(text(&[events[0].as_ref().unwrap().clone()]), ["done"]);
            assert_eq!(
                protocol_error(events[1].as_ref().unwrap_err()),
                ProtocolError::UnexpectedContinuation
            );
        }
    }
}

/// Section 6: UTF-8 handling, failing as early as the bytes allow.
mod utf8 {
    use super::*;

    #[test]
    fn valid_text_in_any_fragmentation() {
        let s = "κόσμε 𝄞 ∮ E⋅da = Q, n → ∞ ✓ abc";
        let bytes = s.as_bytes();
        for split in 1..bytes.len() {
            for mut h in both() {
                h.send_frame(false, 0x1, &bytes[..split]);
                h.send_frame(true, 0x0, &bytes[split..]);
                assert_eq!(h.ok_events(), vec![Event::Message(Message::text(s))], "split {split}");
            }
        }
    }

    #[test]
    fn invalid_text_fails_with_1007() {
        let cases: &[&[u8]] = &[
            b"\xff",
            b"\xc0\xaf",            // overlong '/'
            b"\xed\xa0\x80",        // surrogate U+D800
            b"\xf4\x90\x80\x80",    // above U+10FFFF
            b"abc\xce\xba\xe1\xbd", // truncated at the end
            b"\x80",
        ];
        for bad in cases {
            for mut h in both() {
                h.send_frame(true, 0x1, bad);
                let err = h.assert_failed_with(CloseCode::INVALID_PAYLOAD);
                assert!(matches!(protocol_error(&err), ProtocolError::InvalidUtf8 { .. }));
            }
        }
    }

    #[test]
    fn fails_on_the_fragment_that_makes_it_invalid() {
        // Autobahn 6.4.1: valid first fragment, the second holds the invalid sequence; the
        // failure must come before the third fragment arrives.
        for mut h in both() {
            h.send_frame(false, 0x1, "κόσμε".as_bytes());
            assert!(h.events().is_empty());
            h.send_frame(false, 0x0, b"\xf4\x90\x80\x80");
            let err = h.events().pop().expect("fails at the second fragment").unwrap_err();
            assert_eq!(
                protocol_error(&err),
                ProtocolError::InvalidUtf8 { position: "κόσμε".len() as u64 }
            );
            h.assert_sent_close(CloseCode::INVALID_PAYLOAD);
        }
    }

    #[test]
    fn fails_inside_a_single_frame_as_its_bytes_arrive() {
        // Autobahn 6.4.3: one frame delivered in chops; the chop with the invalid bytes fails
        // before the rest of the frame arrives.
        for mut h in both() {
            let mut payload = "κόσμε".as_bytes().to_vec();
            let bad_at = payload.len();
            payload.extend_from_slice(b"\xf4\x90\x80\x80");
            payload.extend_from_slice(b"edited");
            let wire = h.frame(true, 0, 0x1, &payload);
            let header_len = wire.len() - payload.len();
            h.conn.handle_bytes(&wire[..header_len + bad_at]);
            assert!(h.events().is_empty());
            h.conn.handle_bytes(&wire[header_len + bad_at..header_len + bad_at + 2]);
            let err = h.events().pop().expect("fails at the chop").unwrap_err();
            assert_eq!(
                protocol_error(&err),
                ProtocolError::InvalidUtf8 { position: bad_at as u64 }
            );
        }
    }

    #[test]
    fn binary_is_not_validated() {
        for mut h in both() {
            h.send_frame(true, 0x2, b"\xff\xfe");
            assert_eq!(h.ok_events(), vec![Event::Message(Message::binary(&b"\xff\xfe"[..]))]);
        }
    }
}

/// Section 7: close handling.
mod close {
    use super::*;

    #[test]
    fn peer_close_is_echoed_and_data_after_it_ignored() {
        for mut h in both() {
            h.send_close(1000, "bye");
            h.send_text("after close");
            h.send_frame(true, 0x9, b"ping after close");
            let events = h.ok_events();
            assert_eq!(
                events,
                vec![Event::Close(CloseFrame::new(CloseCode::NORMAL, "bye").unwrap())]
            );
            let sent = h.sent_frames();
            assert_eq!(sent.len(), 1, "only the close reply, no pong");
            assert_eq!(sent[0].close_code(), Some(CloseCode::NORMAL));
            assert_eq!(h.conn.state(), State::Closed);
            let err = h.conn.closed_error();
            assert!(err.is_closed_ok(), "{err:?}");
            let info = err.connection_closed().unwrap();
            assert_eq!(info.received_then_sent, Some(true));
            assert!(matches!(h.conn.send(&Message::text("late")), Err(Error::InvalidState(_))));
        }
    }

    #[test]
    fn server_closes_tcp_first_client_waits() {
        let mut s = Harness::server();
        s.send_close(1000, "");
        s.ok_events();
        assert!(s.conn.wants_transport_close());

        let mut c = Harness::client();
        c.send_close(1000, "");
        c.ok_events();
        assert!(!c.conn.wants_transport_close(), "client waits for the server's TCP close");
        c.conn.handle_eof();
        assert!(c.events().is_empty());
        assert!(c.conn.wants_transport_close());
        assert!(c.conn.closed_error().is_closed_ok());
    }

    #[test]
    fn client_gives_up_waiting_for_tcp_close_after_the_timeout() {
        let mut c = Harness::client_with(
            ProtocolConfig::default()
                .with_keepalive(None, None)
                .with_close_timeout(Some(Duration::from_secs(3))),
        );
        c.send_close(1000, "");
        c.ok_events();
        assert_eq!(c.conn.poll_timeout(), Some(c.now + Duration::from_secs(3)));
        c.advance(Duration::from_secs(3));
        assert!(c.conn.wants_transport_close());
        assert!(c.events().is_empty(), "the handshake completed: no error");
    }

    #[test]
    fn we_close_first_then_peer_replies() {
        for mut h in both() {
            h.conn.close(CloseFrame::new(CloseCode::GOING_AWAY, "shutdown").unwrap()).unwrap();
            assert_eq!(h.conn.state(), State::Closing);
            assert_eq!(h.sent_frames()[0].close_code(), Some(CloseCode::GOING_AWAY));
            assert!(matches!(
                h.conn.send(&Message::text("x")),
                Err(Error::InvalidState(s)) if s.state == State::Closing
            ));
            // Data the peer sent before seeing our close is still delivered.
            h.send_text("in flight");
            h.send_close(1001, "");
            let events = h.ok_events();
            assert_eq!(text(&events), ["in flight"]);
            assert!(matches!(events[1], Event::Close(_)));
            assert!(h.sent_frames().is_empty(), "no second close frame");
            let err = h.conn.closed_error();
            assert!(err.is_closed_ok());
            assert_eq!(err.connection_closed().unwrap().received_then_sent, Some(false));
        }
    }

    #[test]
    fn close_timeout_when_peer_never_replies() {
        let mut h = Harness::server_with(
            ProtocolConfig::default()
                .with_keepalive(None, None)
                .with_close_timeout(Some(Duration::from_secs(10))),
        );
        h.conn.close(CloseFrame::normal()).unwrap();
        h.advance(Duration::from_secs(9));
        assert!(!h.conn.wants_transport_close());
        h.advance(Duration::from_secs(1));
        assert!(h.conn.wants_transport_close());
        let err = h.events().pop().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Timeout(t) if t.phase == palisade_proto::error::TimeoutPhase::Close)
        );
        assert!(!h.conn.closed_error().is_closed_ok());
    }

    #[test]
    fn advance_time_moves_the_close_deadline_and_never_goes_back() {
        let mut h = Harness::server_with(
            ProtocolConfig::default()
                .with_keepalive(None, None)
                .with_close_timeout(Some(Duration::from_secs(10))),
        );
        // A minute passes with no wake-up; the driver tells the time just before closing.
        let later = h.now + Duration::from_secs(60);
        h.conn.advance_time(later);
        // An older time is ignored.
        h.conn.advance_time(h.now);
        h.conn.close(CloseFrame::normal()).unwrap();
        assert_eq!(h.conn.poll_timeout(), Some(later + Duration::from_secs(10)));
        h.conn.handle_timeout(later + Duration::from_secs(9));
        assert!(!h.conn.wants_transport_close(), "the close timeout counts from the close");
        h.conn.handle_timeout(later + Duration::from_secs(10));
        assert!(h.conn.wants_transport_close());
    }

    #[test]
    fn empty_close_is_no_status_and_answered_empty() {
        for mut h in both() {
            h.send_frame(true, 0x8, b"");
            assert_eq!(h.ok_events(), vec![Event::Close(CloseFrame::no_status())]);
            let sent = h.sent_frames();
            assert_eq!(sent[0].header.opcode, OpCode::Close);
            assert!(sent[0].payload.is_empty());
            assert!(h.conn.closed_error().is_closed_ok());
        }
    }

    #[test]
    fn valid_close_codes_are_accepted() {
        for code in
            [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
        {
            for mut h in both() {
                h.send_close(code, "");
                assert_eq!(h.ok_events().len(), 1, "code {code}");
                assert_eq!(h.sent_frames()[0].close_code(), Some(CloseCode(code)));
            }
        }
    }

    #[test]
    fn invalid_close_codes_fail() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            for mut h in both() {
                h.send_close(code, "");
                let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
                assert_eq!(protocol_error(&err), ProtocolError::InvalidCloseCode { code });
            }
        }
    }

    #[test]
    fn one_byte_close_payload_fails() {
        for mut h in both() {
            h.send_frame(true, 0x8, b"\x03");
            let err = h.assert_failed_with(CloseCode::PROTOCOL_ERROR);
            assert_eq!(protocol_error(&err), ProtocolError::InvalidClosePayload);
        }
    }

    #[test]
    fn close_reason_must_be_utf8() {
        for mut h in both() {
            let mut p = 1000u16.to_be_bytes().to_vec();
            p.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80");
            h.send_frame(true, 0x8, &p);
            let err = h.assert_failed_with(CloseCode::INVALID_PAYLOAD);
            assert_eq!(protocol_error(&err), ProtocolError::InvalidCloseReason);
        }
    }

    #[test]
    fn close_with_123_byte_reason_is_accepted() {
        for mut h in both() {
            h.send_close(1000, &"r".repeat(123));
            assert!(matches!(h.ok_events()[0], Event::Close(ref f) if f.reason().len() == 123));
        }
    }

    #[test]
    fn eof_before_close_is_abnormal() {
        for mut h in both() {
            h.send_text("hi");
            h.conn.handle_bytes(&[0x81]); // half a header
            h.conn.handle_eof();
            assert_eq!(text(&h.ok_events()), ["hi"]);
            assert_eq!(h.conn.state(), State::Closed);
            let err = h.conn.closed_error();
            assert_eq!(err.connection_closed().unwrap().code(), CloseCode::ABNORMAL);
            assert!(err.is_retryable());
        }
    }
}

/// Section 9: limits, enforced from headers before anything is buffered.
mod limits {
    use super::*;

    #[test]
    fn announced_huge_frame_is_refused_from_its_header() {
        for mut h in both() {
            // Only the header of a 2^62-byte frame arrives.
            let mut header = vec![0x82, 127];
            header.extend_from_slice(&(1u64 << 62).to_be_bytes());
            if h.conn.role() == palisade_proto::Role::Server {
                header[1] |= 0x80;
                header.extend_from_slice(&[1, 2, 3, 4]);
            }
            h.conn.handle_bytes(&header);
            let err = h.assert_failed_with(CloseCode::MESSAGE_TOO_BIG);
            assert_eq!(
                err.to_string(),
                PayloadTooBig { size: Some(1 << 62), max: 1 << 20, what: SizeLimit::Frame }
                    .to_string()
            );
        }
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let config =
            ProtocolConfig::default().with_keepalive(None, None).with_max_message_size(1000);
        for mut h in [Harness::server_with(config.clone()), Harness::client_with(config.clone())] {
            h.send_frame(false, 0x2, &[0; 600]);
            h.send_frame(false, 0x0, &[0; 400]);
            assert!(h.events().is_empty(), "exactly at the limit is fine so far");
            h.send_frame(true, 0x0, &[0; 1]);
            let err = h.assert_failed_with(CloseCode::MESSAGE_TOO_BIG);
            assert!(
                matches!(err, Error::PayloadTooBig(p) if p.size == Some(1001) && p.max == 1000)
            );
        }
    }

    #[test]
    fn message_exactly_at_the_limit_is_delivered() {
        let config =
            ProtocolConfig::default().with_keepalive(None, None).with_max_message_size(1000);
        let mut h = Harness::server_with(config);
        h.send_frame(true, 0x2, &[9; 1000]);
        assert_eq!(h.ok_events(), vec![Event::Message(Message::binary(vec![9u8; 1000]))]);
    }

    #[test]
    fn frame_limit_is_separate_from_message_limit() {
        let config = ProtocolConfig::default()
            .with_keepalive(None, None)
            .with_max_frame_size(100)
            .with_max_message_size(1000);
        let mut h = Harness::server_with(config);
        h.send_frame(false, 0x2, &[0; 100]);
        h.send_frame(true, 0x0, &[0; 100]);
        assert_eq!(h.ok_events().len(), 1);
        h.send_frame(true, 0x2, &[0; 101]);
        h.assert_failed_with(CloseCode::MESSAGE_TOO_BIG);
    }
}

/// Keepalive and idle timers on the virtual clock.
mod timers {
    use super::*;

    fn keepalive() -> ProtocolConfig {
        ProtocolConfig::default()
            .with_keepalive(Some(Duration::from_secs(20)), Some(Duration::from_secs(5)))
    }

    #[test]
    fn ping_sent_on_interval_and_rtt_measured() {
        let mut h = Harness::server_with(keepalive());
        assert_eq!(h.conn.poll_timeout(), Some(h.start + Duration::from_secs(20)));
        h.advance(Duration::from_secs(20));
        let sent = h.sent_frames();
        assert_eq!(sent[0].header.opcode, OpCode::Ping);
        h.advance(Duration::from_millis(30));
        h.send_frame(true, 0xA, &sent[0].payload);
        h.ok_events();
        assert_eq!(h.conn.last_rtt(), Some(Duration::from_millis(30)));
        // Past the pong deadline nothing happens: the pong came.
        h.advance(Duration::from_secs(6));
        assert_eq!(h.conn.state(), State::Open);
    }

    #[test]
    fn missing_pong_fails_with_1011() {
        for mut h in [Harness::server_with(keepalive()), Harness::client_with(keepalive())] {
            h.advance(Duration::from_secs(20));
            assert_eq!(h.sent_frames()[0].header.opcode, OpCode::Ping);
            h.advance(Duration::from_secs(4));
            assert!(h.events().is_empty());
            h.advance(Duration::from_secs(1));
            let err = h.assert_failed_with(CloseCode::INTERNAL_ERROR);
            assert!(
                matches!(err, Error::Timeout(t) if t.phase == palisade_proto::error::TimeoutPhase::Keepalive)
            );
        }
    }

    /// While the owner holds input back, neither a missing pong nor silence fails the peer;
    /// once it reads again, the deadlines apply from the last hold.
    #[test]
    fn held_input_suspends_the_pong_and_idle_deadlines() {
        let mut h =
            Harness::server_with(keepalive().with_idle_timeout(Some(Duration::from_secs(30))));
        h.advance(Duration::from_secs(20));
        assert_eq!(h.sent_frames()[0].header.opcode, OpCode::Ping);
        for _ in 0..12 {
            h.advance(Duration::from_secs(4));
            h.conn.hold_input(h.now);
            h.conn.handle_timeout(h.now);
            assert_eq!(h.conn.state(), State::Open);
        }
        // Pings went on being sent meanwhile.
        assert!(h.sent_frames().iter().any(|f| f.header.opcode == OpCode::Ping));
        // Reading again: the next ping's pong deadline applies as before.
        h.advance(Duration::from_secs(20));
        h.advance(Duration::from_secs(5));
        h.assert_failed_with(CloseCode::INTERNAL_ERROR);
    }

    #[test]
    fn idle_timeout_closes_with_1001() {
        let mut h = Harness::server_with(
            ProtocolConfig::default()
                .with_keepalive(None, None)
                .with_idle_timeout(Some(Duration::from_secs(60))),
        );
        h.advance(Duration::from_secs(50));
        h.send_text("activity");
        h.ok_events();
        h.advance(Duration::from_secs(50));
        assert_eq!(h.conn.state(), State::Open, "activity reset the idle clock");
        h.advance(Duration::from_secs(10));
        h.assert_failed_with(CloseCode::GOING_AWAY);
    }
}
