//! The chat example (`examples/chat.rs`), end to end over real sockets: its JavaScript client
//! `palisade.js` under Node (`examples/chat/tests/client.mjs`, against the `json_requests`
//! example and `ws` servers); its page in headless Chromium (`examples/chat/tests/browser.mjs`);
//! and its contract for tools — the login, the upgrade's refusals, the messages, the limits, the
//! closes, TLS and the log — with palisade's client against the binary (module `server`).

use crate::support::{NodeGroup, Peer};

/// A running example server: its process and the `ws://` URL it printed.
async fn example_server(name: &str, args: &[&str]) -> (Peer, String) {
    let mut server = Peer::example(name, args);
    let line = server.line_starting("listening on ").await;
    let url = line["listening on ".len()..].trim().to_owned();
    (server, url)
}

/// Runs a Node script of `examples/chat/tests/` to its end; it prints `ok CASE` per case and
/// `NAME: N passed, 0 failed` last.
async fn node_script(script: &str, args: &[&str]) -> Vec<String> {
    let mut node = Peer::chat_node(script, args);
    let group = NodeGroup::of(&node);
    let mut lines = Vec::new();
    loop {
        let line = node.line().await;
        let last = line.contains(" passed, 0 failed");
        assert!(!line.starts_with("FAILED") && line != "timed out", "{script}: {line}");
        lines.push(line);
        if last {
            break;
        }
    }
    assert!(node.wait().await.success(), "{script}: {lines:?}");
    group.ended();
    lines
}

/// palisade.js speaks palisade-json's envelope with a palisade server: requests and their ok
/// and error replies (application codes and palisade's own, as `ReplyError`s with their code
/// and path), `no_reply`, events both ways, the server's requests answered (or refused with a
/// code), refusals of events (`"reply": null`); a timeout with its late reply dropped; and
/// reconnection by close code with backoff (after 1001 and 1006, never after 1008, 4001, 4003,
/// 1000) handing back the recovery offsets.
#[tokio::test]
async fn palisade_js_speaks_the_envelope_and_reconnects_by_close_code() {
    let (_server, url) = example_server("json_requests", &["--addr", "127.0.0.1:0"]).await;
    let lines = node_script("client.mjs", &[&format!("{url}/")]).await;
    assert!(lines.len() >= 13, "{lines:?}");
}

/// The headless Chromium cases, on the real page and server (`examples/chat/tests/browser.mjs`
/// starts, restarts and stops the chat binary itself): two pages exchange public and private
/// messages and see presence, typing and the keepalive's round trip; error replies beside the
/// input with the connection up; a bad and an expired token refused with the reason shown; a
/// duplicate login refused; a dropped connection recovered with the missed message; a restart
/// shown as 1001 "server restarting" and reconnected; a killed server shown as 1006 and its
/// successor reconnected; a flood closed with 1008 and not retried; palisade.js refusing a tag
/// the served protocol description does not declare; with `--redis`, two
/// servers and a page on each seeing each other online and talking; an inactivity timeout shown. Screenshots of every page on a failure go to
/// `target/chat-browser/`.
#[tokio::test]
async fn the_page_in_headless_chromium() {
    let binary = crate::support::example_binary("chat");
    let screenshots = crate::support::target_dir().join("chat-browser");
    let lines =
        node_script("browser.mjs", &[binary.to_str().unwrap(), screenshots.to_str().unwrap()])
            .await;
    assert!(lines.len() >= 12, "{lines:?}");
}

/// The chat server's contract, over real sockets: `POST /login`, `/ws` with a bearer token,
/// the palisade-json envelope. Each test starts the binary with short limits.
mod server {
    use std::collections::VecDeque;
    use std::time::Duration;

    use palisade::client::Client;
    use palisade::http::{HeaderValue, header::AUTHORIZATION};
    use palisade::json::SUBPROTOCOL;
    use palisade::{CloseCode, Message, WebSocket};
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::support::{Peer, example_command};

    const SECRET: &str = "a test secret of the chat, 32 bytes or more";
    const WAIT: Duration = Duration::from_secs(10);

    /// A chat server process and its `HOST:PORT`.
    struct Chat {
        process: Peer,
        addr: String,
    }

    async fn chat(args: &[&str]) -> Chat {
        let mut all = vec!["--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut command = example_command("chat", &all);
        command.env("CHAT_SECRET", SECRET).env("RUST_LOG", "warn");
        let mut process = Peer::command(command);
        let line = process.line_starting("chat on ").await;
        let addr = line.trim_start_matches("chat on http://").trim_end_matches('/').to_owned();
        Chat { process, addr }
    }

    /// `POST /login` with `body`, by hand over TCP: the status and the JSON answer.
    async fn login(addr: &str, body: &str) -> (u16, Value) {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
        let status = response[9..12].parse().unwrap();
        let (_, json) = response.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response:?}")))
    }

    /// The status of a login as `name` once its session, just closed by the client, has ended
    /// on the server too: that happens in the server's task, right after the close handshake,
    /// so the login is tried again (every 20 ms, for 10 s at most) while it answers 409.
    async fn free_again(addr: &str, name: &str) -> u16 {
        let body = json!({ "name": name }).to_string();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = login(addr, &body).await.0;
            if status != 409 || tokio::time::Instant::now() > deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn token(addr: &str, name: &str) -> String {
        let (status, body) = login(addr, &json!({ "name": name }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A token with these claims, signed with HS256 and `secret`.
    fn signed(claims: &Value, secret: &str) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn client(token: Option<&str>) -> Client {
        let client = Client::new().with_subprotocols([SUBPROTOCOL]);
        match token {
            Some(token) => client.with_header(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            ),
            None => client,
        }
    }

    /// The refusal of an upgrade: its status and JSON body.
    async fn refused(addr: &str, token: Option<&str>) -> (u16, Value) {
        let err = client(token).connect(&format!("ws://{addr}/ws")).await.unwrap_err();
        let status = err.received_status().unwrap_or_else(|| panic!("{err}"));
        let palisade::Error::Handshake(handshake) = &err else { panic!("{err}") };
        let palisade::error::HandshakeError::InvalidStatus(invalid) = &**handshake else {
            panic!("{err}")
        };
        (status.as_u16(), serde_json::from_slice(invalid.body()).unwrap())
    }

    /// A logged-in user's connection, speaking the envelope by hand.
    struct User {
        ws: WebSocket,
        pushes: VecDeque<Value>,
        next_id: u64,
    }

    impl User {
        async fn connect(addr: &str, name: &str) -> Self {
            let token = token(addr, name).await;
            let connected = client(Some(&token)).connect(&format!("ws://{addr}/ws")).await.unwrap();
            assert_eq!(connected.subprotocol(), Some(SUBPROTOCOL));
            let mut user =
                Self { ws: connected.into_socket(), pushes: VecDeque::new(), next_id: 0 };
            assert_eq!(user.event("welcome").await["name"], name);
            user
        }

        async fn recv(&mut self) -> Value {
            let message = tokio::time::timeout(WAIT, self.ws.recv()).await.unwrap().unwrap();
            let Message::Text(text) = message else { panic!("{message:?}") };
            serde_json::from_str(&text).unwrap()
        }

        /// Sends a request and returns its reply (ok or error); pushes meanwhile are kept.
        async fn request(&mut self, event: &str, data: Value) -> Value {
            let id = self.next_id;
            self.next_id += 1;
            self.send(json!({ "event": event, "id": id, "data": data }).to_string()).await;
            loop {
                let message = self.recv().await;
                if message["reply"] == id {
                    return message;
                }
                self.pushes.push_back(message);
            }
        }

        async fn send(&mut self, text: String) {
            self.ws.send(text).await.unwrap();
        }

        /// The next push of `event` (earlier pushes of other events are skipped).
        async fn event(&mut self, event: &str) -> Value {
            while let Some(message) = self.pushes.pop_front() {
                if message["event"] == event {
                    return message["data"].clone();
                }
            }
            loop {
                let message = self.recv().await;
                if message["event"] == event {
                    return message["data"].clone();
                }
            }
        }

        /// Reads until the connection closes; the close frame received.
        async fn closed(&mut self) -> (CloseCode, String) {
            loop {
                match tokio::time::timeout(WAIT, self.ws.recv()).await.unwrap() {
                    Ok(_) => continue,
                    Err(err) => {
                        let closed = err.connection_closed().unwrap_or_else(|| panic!("{err}"));
                        let frame = closed.received.clone().unwrap_or_else(|| panic!("{err}"));
                        return (frame.code(), frame.reason().to_owned());
                    }
                }
            }
        }
    }

    fn error_code(reply: &Value) -> &str {
        assert_eq!(reply["status"], "error", "{reply}");
        reply["error"]["code"].as_str().unwrap()
    }

    /// `GET /protocol.json`: the chat's messages (from `#[palisade::protocol]`) and the room
    /// protocol served beside them, with JSON Schemas and error codes; and the server answers
    /// what it describes.
    #[tokio::test]
    async fn the_protocol_description_is_served_and_kept() {
        let chat = chat(&[]).await;
        let mut tcp = tokio::net::TcpStream::connect(&chat.addr).await.unwrap();
        let request = format!(
            "GET /protocol.json HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            chat.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("content-type: application/json"), "{response}");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        let description: Value = serde_json::from_str(body).unwrap();
        assert_eq!(description["name"], "Chat");
        assert_eq!(description["subprotocol"], SUBPROTOCOL);
        let messages = description["messages"].as_array().unwrap();
        let listed: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m["kind"].as_str().unwrap(), m["tag"].as_str().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [
                ("request", "say"),
                ("request", "private"),
                ("event", "typing"),
                ("push", "welcome"),
                ("push", "private"),
                ("push", "keepalive"),
                ("request", "room.join"),
                ("request", "room.leave"),
                ("request", "room.presence"),
                ("request", "user.send"),
                ("push", "room.message"),
                ("push", "presence.join"),
                ("push", "presence.leave"),
                ("push", "user.message"),
            ]
        );
        let message = |tag: &str| messages.iter().find(|m| m["tag"] == tag).unwrap();
        let say = message("say");
        assert_eq!(say["validated"], true);
        assert_eq!(say["payload"]["properties"]["text"]["maxLength"], 500);
        let codes = |m: &Value| -> Vec<String> {
            m["errors"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["code"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(codes(say), ["not_joined", "no_such_user", "rate_limited", "unavailable"]);
        let join = message("room.join");
        assert!(join["payload"]["properties"]["recover"].is_object(), "{join}");
        assert!(join["reply"]["properties"]["recovery"].is_object(), "{join}");
        assert_eq!(
            codes(join),
            ["invalid_room", "too_many_rooms", "already_joined", "unavailable"]
        );

        // What is described is what is answered: the join reply has the described keys, an
        // error reply's code is one of those listed.
        let mut alice = User::connect(&chat.addr, "alice").await;
        let joined = alice.request("room.join", json!({ "room": "lobby" })).await;
        let keys: Vec<&String> = joined["data"].as_object().unwrap().keys().collect();
        let described = join["reply"]["properties"].as_object().unwrap();
        assert!(keys.iter().all(|k| described.contains_key(*k)), "{joined} vs {join}");
        let again = alice.request("room.join", json!({ "room": "lobby" })).await;
        assert!(codes(join).contains(&error_code(&again).to_owned()), "{again}");
        let private = alice.request("private", json!({ "to": "nobody", "text": "hi" })).await;
        assert!(codes(message("private")).contains(&error_code(&private).to_owned()));
    }

    /// `POST /login`: a token for a valid name, 400 with a JSON error for others.
    #[tokio::test]
    async fn login_issues_tokens_for_valid_names_only() {
        let chat = chat(&[]).await;
        for name in ["abc", "alice_B-2", &"x".repeat(32)] {
            let (status, body) = login(&chat.addr, &json!({ "name": name }).to_string()).await;
            assert_eq!(status, 200, "{name}: {body}");
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            assert_eq!(body["token"].as_str().unwrap().split('.').count(), 3, "{body}");
        }
        for name in ["ab", &"x".repeat(33), "al ice", "élise", "bob!", ""] {
            let (status, body) = login(&chat.addr, &json!({ "name": name }).to_string()).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_name")), "{name}");
            assert!(body["message"].as_str().unwrap().contains("3 to 32"), "{body}");
        }
        // A body over 1 KiB.
        let huge = json!({ "name": "x".repeat(2000) }).to_string();
        let (status, answer) = login(&chat.addr, &huge).await;
        assert_eq!((status, answer["error"].as_str()), (413, Some("invalid_body")));
        for body in ["", "alice", "{\"name\": 7}", "{\"name\":\"alice\",\"admin\":true}", "[]"] {
            let (status, answer) = login(&chat.addr, body).await;
            assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_body")), "{body}");
        }
    }

    /// The upgrade checks the token before accepting: 401 with a JSON body that says which of
    /// missing, invalid or expired; forged tokens (`alg: none`, another key, a changed claim)
    /// are invalid.
    #[tokio::test]
    async fn the_upgrade_refuses_missing_invalid_expired_and_forged_tokens() {
        let chat = chat(&[]).await;
        let addr = &chat.addr;
        assert_eq!(
            refused(addr, None).await,
            (401, json!({"error": "missing_token", "message": "send the token from POST /login"}))
        );
        assert_eq!(refused(addr, Some("garbage")).await.1["error"], "invalid_token");
        let expired =
            signed(&json!({ "sub": "alice", "iat": now() - 7200, "exp": now() - 3600 }), SECRET);
        assert_eq!(
            refused(addr, Some(&expired)).await,
            (
                401,
                json!({"error": "expired_token", "message": "the token has expired: log in again"})
            )
        );
        let valid = token(addr, "alice").await;
        let [header, claims, signature] = valid.split('.').collect::<Vec<_>>()[..] else {
            panic!()
        };
        let b64 = |v: &Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let forged = [
            // alg none, no signature
            format!("{}.{claims}.", b64(&json!({"alg": "none", "typ": "JWT"}))),
            // alg none, the original signature kept
            format!("{}.{claims}.{signature}", b64(&json!({"alg": "none", "typ": "JWT"}))),
            // another algorithm named
            format!("{}.{claims}.{signature}", b64(&json!({"alg": "HS512", "typ": "JWT"}))),
            // signed with another key
            signed(
                &json!({ "sub": "alice", "iat": now(), "exp": now() + 600 }),
                "another secret, also 32 bytes long!",
            ),
            // a claim changed, the signature kept
            format!(
                "{header}.{}.{signature}",
                b64(&json!({ "sub": "admin", "iat": now(), "exp": now() + 600 }))
            ),
            // a valid signature over an invalid name
            signed(&json!({ "sub": "no way", "iat": now(), "exp": now() + 600 }), SECRET),
        ];
        for token in &forged {
            assert_eq!(
                refused(addr, Some(token)).await,
                (401, json!({"error": "invalid_token", "message": "the token is not valid"})),
                "{token}"
            );
        }
        // The valid one opens.
        let connected = client(Some(&valid)).connect(&format!("ws://{addr}/ws")).await.unwrap();
        assert_eq!(connected.subprotocol(), Some(SUBPROTOCOL));
    }

    /// The origin allow-list: a page of another origin is refused with 403, the server's own
    /// origins and `--allow-origin` are let in; a client that does not offer
    /// `palisade.json.v1` is refused with 400.
    #[tokio::test]
    async fn origins_and_the_subprotocol_are_checked() {
        let chat = chat(&["--allow-origin", "https://chat.example"]).await;
        let token = signed(&json!({ "sub": "alice", "iat": now(), "exp": now() + 600 }), SECRET);
        let url = format!("ws://{}/ws", chat.addr);
        let port = chat.addr.rsplit(':').next().unwrap();
        let err = client(Some(&token))
            .with_origin("http://evil.example")
            .connect(&url)
            .await
            .unwrap_err();
        assert_eq!(err.received_status().map(|s| s.as_u16()), Some(403), "{err}");
        for origin in [
            format!("http://{}", chat.addr),
            format!("http://localhost:{port}"),
            "https://chat.example".to_owned(),
        ] {
            let connected = client(Some(&token)).with_origin(&origin).connect(&url).await.unwrap();
            connected.into_socket().close(CloseCode::NORMAL, "").await.unwrap();
            assert_eq!(free_again(&chat.addr, "alice").await, 200);
        }
        let bare = Client::new()
            .with_header(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let err = bare.connect(&url).await.unwrap_err();
        assert_eq!(err.received_status().map(|s| s.as_u16()), Some(400), "{err}");
    }

    /// The log has one line per refusal and close, naming the reason and the user, and never
    /// a token: not the valid one, not a forged one, not one sent as a subprotocol.
    #[tokio::test]
    async fn the_log_says_why_and_never_holds_a_token() {
        let dir = crate::support::target_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("chat-log-{}.txt", std::process::id()));
        let mut command = example_command("chat", &["--addr", "127.0.0.1:0"]);
        command.env("CHAT_SECRET", SECRET).env("RUST_LOG", "info");
        let file = std::fs::File::create(&log).unwrap();
        let mut process = Peer::command_with_stderr(command, file.into());
        let line = process.line_starting("chat on ").await;
        let addr = line.trim_start_matches("chat on http://").trim_end_matches('/').to_owned();

        let valid = token(&addr, "alice").await;
        let expired =
            signed(&json!({ "sub": "bob", "iat": now() - 7200, "exp": now() - 3600 }), SECRET);
        let forged = signed(
            &json!({ "sub": "bob", "iat": now(), "exp": now() + 600 }),
            "not the secret, but 32 bytes long!!",
        );
        assert_eq!(refused(&addr, Some(&expired)).await.0, 401);
        assert_eq!(refused(&addr, Some(&forged)).await.0, 401);
        assert_eq!(refused(&addr, None).await.0, 401);
        let browser = Client::new()
            .with_subprotocols([SUBPROTOCOL.to_owned(), format!("bearer.{forged}")])
            .connect(&format!("ws://{addr}/ws?refusal=close"))
            .await
            .unwrap();
        let mut browser = User { ws: browser.into_socket(), pushes: VecDeque::new(), next_id: 0 };
        assert_eq!(browser.closed().await.0, CloseCode(4001));
        let mut alice = User::connect(&addr, "alice").await;
        let reply =
            alice.request("private", json!({ "to": "nobody", "text": "secret words" })).await;
        assert_eq!(error_code(&reply), "no_such_user");
        let pid = process.pid().unwrap().to_string();
        assert!(
            std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success()
        );
        assert_eq!(alice.closed().await.0, CloseCode::GOING_AWAY);
        assert!(process.wait().await.success());

        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        for expected in [
            "expired token",
            "invalid token",
            "missing token",
            "refused after accept with 4001",
            "code=\"no_such_user\"",
            "login name=alice",
            "server restarting",
        ] {
            assert!(text.contains(expected), "{expected:?} is not in the log:\n{text}");
        }
        for token in [&valid, &expired, &forged] {
            let signature = token.rsplit('.').next().unwrap();
            assert!(!text.contains(signature), "a token is in the log:\n{text}");
        }
        assert!(!text.contains("eyJ"), "a JWT part is in the log:\n{text}");
        assert!(!text.contains("secret words"), "a message's text is in the log:\n{text}");
    }

    /// The browser variant (`?refusal=close`, the token as the `bearer.TOKEN` subprotocol):
    /// accepted, then closed with 4001 and the reason; a name in use gets 4003.
    #[tokio::test]
    async fn the_browser_variant_closes_with_4001_and_4003() {
        let chat = chat(&[]).await;
        let url = format!("ws://{}/ws?refusal=close", chat.addr);
        let expired =
            signed(&json!({ "sub": "alice", "iat": now() - 7200, "exp": now() - 3600 }), SECRET);
        for (protocols, reason) in [
            (vec![SUBPROTOCOL.to_owned()], "missing token"),
            (vec![SUBPROTOCOL.to_owned(), "bearer.not-a-token".to_owned()], "invalid token"),
            (vec![SUBPROTOCOL.to_owned(), format!("bearer.{expired}")], "expired token"),
        ] {
            let connected = Client::new().with_subprotocols(protocols).connect(&url).await.unwrap();
            // The server answers with the real protocol, never the token.
            assert_eq!(connected.subprotocol(), Some(SUBPROTOCOL));
            let mut user =
                User { ws: connected.into_socket(), pushes: VecDeque::new(), next_id: 0 };
            assert_eq!(user.closed().await, (CloseCode(4001), reason.to_owned()));
        }
        let _alice = User::connect(&chat.addr, "alice").await;
        let token = signed(&json!({ "sub": "alice", "iat": now(), "exp": now() + 600 }), SECRET);
        let connected = Client::new()
            .with_subprotocols([SUBPROTOCOL.to_owned(), format!("bearer.{token}")])
            .connect(&url)
            .await
            .unwrap();
        let mut again = User { ws: connected.into_socket(), pushes: VecDeque::new(), next_id: 0 };
        assert_eq!(again.closed().await, (CloseCode(4003), "name already connected".to_owned()));
    }

    /// One session per name: while alice is connected, logging in or connecting as alice is
    /// refused with 409; once she has left, the name is free again.
    #[tokio::test]
    async fn one_session_per_name() {
        let chat = chat(&[]).await;
        let spare = token(&chat.addr, "alice").await;
        let alice = User::connect(&chat.addr, "alice").await;
        let (status, body) = login(&chat.addr, r#"{"name":"alice"}"#).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("name_in_use")));
        assert_eq!(refused(&chat.addr, Some(&spare)).await.0, 409);
        alice.ws.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert_eq!(free_again(&chat.addr, "alice").await, 200);
    }

    /// A page that comes back proves with its last `welcome`'s resume token which session it
    /// had, and takes that session over instead of being refused as a second login: the old
    /// connection (perhaps half-open, or on a dead node) is closed with 1000 "session
    /// replaced". The resume token is no login token, serves its own user only, and replaces
    /// only the session it names.
    #[tokio::test]
    async fn a_resume_token_takes_its_session_over() {
        let chat = chat(&[]).await;
        let url = format!("ws://{}/ws", chat.addr);
        let alice = token(&chat.addr, "alice").await;
        let resuming = |token: &str, resume: &str| {
            client(Some(token))
                .with_subprotocols([SUBPROTOCOL.to_owned(), format!("resume.{resume}")])
        };
        let user = |ws: WebSocket| User { ws, pushes: VecDeque::new(), next_id: 0 };
        let mut old = user(client(Some(&alice)).connect(&url).await.unwrap().into_socket());
        let resume = old.event("welcome").await["resume"].as_str().unwrap().to_owned();

        assert_eq!(refused(&chat.addr, Some(&alice)).await.0, 409);
        assert_eq!(refused(&chat.addr, Some(&resume)).await.0, 401, "a resume token is no login");
        // Bob offering alice's resume token is just bob: alice's session stays.
        let bob = token(&chat.addr, "bob").await;
        let mut bob = user(resuming(&bob, &resume).connect(&url).await.unwrap().into_socket());
        assert_eq!(bob.event("welcome").await["name"], "bob");
        let joined = old.request("room.join", json!({ "room": "lobby" })).await;
        assert_eq!(joined["status"], "ok", "{joined}");

        let mut new = user(resuming(&alice, &resume).connect(&url).await.unwrap().into_socket());
        let welcome = new.event("welcome").await;
        assert_eq!(welcome["name"], "alice");
        assert_eq!(old.closed().await, (CloseCode::NORMAL, "session replaced".to_owned()));
        let joined = new.request("room.join", json!({ "room": "lobby" })).await;
        assert_eq!(joined["status"], "ok", "{joined}");

        // The same resume token again: its session is gone, the new one counts.
        let mut again = user(resuming(&alice, &resume).connect(&url).await.unwrap().into_socket());
        assert_eq!(again.closed().await, (CloseCode(4003), "name already connected".to_owned()));
        let said = new.request("say", json!({ "room": "lobby", "text": "still here" })).await;
        assert_eq!(said["status"], "ok", "{said}");
    }

    /// The user names in a presence list.
    fn users(presence: &Value) -> Vec<&str> {
        presence.as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect()
    }

    /// Rooms (palisade-rooms' protocol) with presence notices and recovery, who is online,
    /// private messages with "no such user", validation errors that keep the connection,
    /// malformed frames answered.
    #[tokio::test]
    async fn rooms_private_messages_validation_and_recovery() {
        let chat = chat(&[]).await;
        let mut alice = User::connect(&chat.addr, "alice").await;
        let mut bob = User::connect(&chat.addr, "bob").await;
        // Who is online: presence in `@online`, which every session is in.
        let online = alice.event("presence.join").await;
        assert_eq!(
            (online["room"].as_str(), online["user"].as_str()),
            (Some("@online"), Some("bob"))
        );

        let joined = alice.request("room.join", json!({ "room": "lobby" })).await;
        assert_eq!(users(&joined["data"]["presence"]), ["alice"], "{joined}");
        let epoch = joined["data"]["recovery"]["epoch"].as_str().unwrap().to_owned();
        bob.request("room.join", json!({ "room": "lobby" })).await;
        let notice = alice.event("presence.join").await;
        assert_eq!(
            (notice["room"].as_str(), notice["user"].as_str()),
            (Some("lobby"), Some("bob"))
        );
        for room in ["a b", "@online", "x"] {
            let reply = bob.request("room.join", json!({ "room": room })).await;
            assert_eq!(error_code(&reply), "invalid_room", "{room}");
        }

        let sent = alice.request("say", json!({ "room": "lobby", "text": "hi bob" })).await;
        assert_eq!(sent["status"], "ok", "{sent}");
        for user in [&mut alice, &mut bob] {
            let message = user.event("room.message").await;
            assert_eq!(message["room"], "lobby");
            assert_eq!(message["event"], "said");
            assert_eq!(message["data"], json!({ "from": "alice", "text": "hi bob" }));
            assert!(message["offset"].is_u64(), "{message}");
        }
        let reply = bob.request("say", json!({ "room": "elsewhere", "text": "x" })).await;
        assert_eq!(error_code(&reply), "not_joined");
        // Who is typing: to the room's other members only.
        bob.send(json!({ "event": "typing", "data": { "room": "lobby" } }).to_string()).await;
        let typing = alice.event("room.message").await;
        assert_eq!(
            (typing["event"].as_str(), &typing["data"]),
            (Some("typing"), &json!({ "name": "bob" }))
        );

        let reply = bob.request("private", json!({ "to": "alice", "text": "psst" })).await;
        assert_eq!(reply["data"], json!({ "to": "alice" }));
        assert_eq!(alice.event("private").await, json!({ "from": "bob", "text": "psst" }));
        let reply = bob.request("private", json!({ "to": "nobody", "text": "hello?" })).await;
        assert_eq!(error_code(&reply), "no_such_user");
        assert_eq!(reply["error"]["message"], "no such user");

        for (text, message) in [
            ("", "the message is empty"),
            ("  ", "the message is empty"),
            (&*"é".repeat(501), "the message is longer than 500 characters"),
        ] {
            let reply = alice.request("say", json!({ "room": "lobby", "text": text })).await;
            assert_eq!(error_code(&reply), "validation_failed");
            assert_eq!(reply["error"]["path"], "data.text");
            assert!(reply["error"]["message"].as_str().unwrap().ends_with(message), "{reply}");
        }
        let long = alice.request("say", json!({ "room": "lobby", "text": "é".repeat(500) })).await;
        assert_eq!(long["status"], "ok");
        alice.send("{not json".to_owned()).await;
        let refusal = alice.refusal().await;
        assert_eq!(error_code(&refusal), "malformed");
        let reply = alice.request("shout", json!({})).await;
        assert_eq!(error_code(&reply), "unknown_event");
        let reply = alice.request("say", json!({ "room": "lobby" })).await;
        assert_eq!(
            (error_code(&reply), reply["error"]["path"].as_str()),
            ("invalid_payload", Some("data"))
        );

        // Recovery: bob leaves, misses two messages, and joins again from his last offset.
        let mut last_seen = 0;
        while last_seen == 0 || bob.pushes.iter().any(|m| m["event"] == "room.message") {
            last_seen = bob.event("room.message").await["offset"].as_u64().unwrap();
        }
        assert_eq!(bob.request("room.leave", json!({ "room": "lobby" })).await["status"], "ok");
        let left = alice.event("presence.leave").await;
        assert_eq!((left["room"].as_str(), left["user"].as_str()), (Some("lobby"), Some("bob")));
        for text in ["one", "two"] {
            alice.request("say", json!({ "room": "lobby", "text": text })).await;
        }
        let recover = json!({ "epoch": epoch, "offset": last_seen });
        let rejoined =
            bob.request("room.join", json!({ "room": "lobby", "recover": recover })).await;
        let recovery = &rejoined["data"]["recovery"];
        assert_eq!(recovery["recovered"], true, "{rejoined}");
        let texts: Vec<&str> = recovery["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["one", "two"]);
        // A position from another epoch (a restarted server): nothing recovered, and why.
        bob.request("room.leave", json!({ "room": "lobby" })).await;
        let old = json!({ "epoch": "another", "offset": 1 });
        let again = bob.request("room.join", json!({ "room": "lobby", "recover": old })).await;
        assert_eq!(again["data"]["recovery"]["recovered"], false);
        assert_eq!(again["data"]["recovery"]["reason"], "epoch_changed");
    }

    /// A burst of posts gets `rate_limited` error replies and the connection goes on; a flood
    /// of frames is closed with 1008.
    #[tokio::test]
    async fn a_burst_is_refused_and_a_flood_closed_with_1008() {
        let chat = chat(&["--burst", "3", "--rate", "0.01", "--flood", "50"]).await;
        let mut alice = User::connect(&chat.addr, "alice").await;
        alice.request("room.join", json!({ "room": "lobby" })).await;
        let mut codes = Vec::new();
        for n in 0..5 {
            let reply =
                alice.request("say", json!({ "room": "lobby", "text": format!("m{n}") })).await;
            codes.push(if reply["status"] == "ok" {
                "ok".to_owned()
            } else {
                error_code(&reply).to_owned()
            });
        }
        assert_eq!(codes, ["ok", "ok", "ok", "rate_limited", "rate_limited"]);
        for _ in 0..500 {
            if alice.ws.send(r#"{"event":"typing","data":{"room":"lobby"}}"#).await.is_err() {
                break;
            }
        }
        assert_eq!(alice.closed().await.0, CloseCode::POLICY_VIOLATION);
    }

    /// A `redis-server` of the test's own on a free port, without persistence; killed (by PID)
    /// when dropped.
    struct Redis {
        _process: Peer,
        url: String,
    }

    async fn redis() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = tokio::process::Command::new("redis-server");
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let process = Peer::command_with_stderr(command, std::process::Stdio::null());
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Redis { _process: process, url: format!("redis://127.0.0.1:{port}/") }
    }

    /// `--redis`: two chat servers sharing one Redis are one chat — who is online, presence in
    /// rooms, room messages, private messages and the one-session-per-name rule span both.
    #[tokio::test]
    async fn two_servers_sharing_redis_are_one_chat() {
        let redis = redis().await;
        let one = chat(&["--redis", &redis.url]).await;
        let two = chat(&["--redis", &redis.url]).await;
        let mut alice = User::connect(&one.addr, "alice").await;
        let mut bob = User::connect(&two.addr, "bob").await;
        let online = alice.event("presence.join").await;
        assert_eq!(
            (online["room"].as_str(), online["user"].as_str()),
            (Some("@online"), Some("bob"))
        );

        alice.request("room.join", json!({ "room": "lobby" })).await;
        let joined = bob.request("room.join", json!({ "room": "lobby" })).await;
        assert_eq!(users(&joined["data"]["presence"]).len(), 2, "{joined}");
        let notice = alice.event("presence.join").await;
        assert_eq!(
            (notice["room"].as_str(), notice["user"].as_str()),
            (Some("lobby"), Some("bob"))
        );

        assert_eq!(
            alice.request("say", json!({ "room": "lobby", "text": "hello, node two" })).await["status"],
            "ok"
        );
        let message = bob.event("room.message").await;
        assert_eq!(message["data"], json!({ "from": "alice", "text": "hello, node two" }));
        let reply = bob.request("private", json!({ "to": "alice", "text": "hi from two" })).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(alice.event("private").await, json!({ "from": "bob", "text": "hi from two" }));

        // Alice has a session on server one: server two refuses her too.
        let (status, body) = login(&two.addr, r#"{"name":"alice"}"#).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("name_in_use")));
        let token = signed(&json!({ "sub": "alice", "iat": now(), "exp": now() + 600 }), SECRET);
        assert_eq!(refused(&two.addr, Some(&token)).await.0, 409);
    }

    /// The keepalive's round trip is pushed to the client after each ping.
    #[tokio::test]
    async fn the_keepalive_round_trip_is_pushed() {
        let chat = chat(&["--keepalive", "0.1"]).await;
        let mut alice = User::connect(&chat.addr, "alice").await;
        let keepalive = alice.event("keepalive").await;
        let rtt = keepalive["rtt_ms"].as_f64().unwrap();
        assert!(rtt.is_finite() && rtt >= 0.0, "{keepalive}");
    }

    /// No message from the user for `--inactivity`: closed with 1000 "inactivity timeout".
    #[tokio::test]
    async fn inactivity_closes_with_1000() {
        let chat = chat(&["--inactivity", "0.3"]).await;
        let mut alice = User::connect(&chat.addr, "alice").await;
        assert_eq!(alice.closed().await, (CloseCode::NORMAL, "inactivity timeout".to_owned()));
    }

    /// SIGTERM: every session is closed with 1001 "server restarting", and the process ends.
    #[tokio::test]
    async fn shutdown_closes_with_1001_server_restarting() {
        let mut chat = chat(&[]).await;
        let mut alice = User::connect(&chat.addr, "alice").await;
        let pid = chat.process.pid().unwrap().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        assert_eq!(alice.closed().await, (CloseCode::GOING_AWAY, "server restarting".to_owned()));
        assert!(chat.process.wait().await.success());
    }

    /// `--tls-cert` and `--tls-key`: the page and the WebSocket over TLS (`wss://`), the
    /// token still checked before accepting.
    #[tokio::test]
    async fn tls_from_a_certificate_and_key() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key)).unwrap();
        let dir = crate::support::target_dir().join(format!("chat-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();

        let mut all = vec!["--addr", "127.0.0.1:0", "--tls-cert"];
        all.extend([cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()]);
        let mut command = example_command("chat", &all);
        command.env("CHAT_SECRET", SECRET).env("RUST_LOG", "warn");
        let mut process = Peer::command(command);
        let line = process.line_starting("chat on ").await;
        let addr = line.trim_start_matches("chat on https://").trim_end_matches('/').to_owned();
        std::fs::remove_dir_all(&dir).unwrap();

        let tls = || {
            Client::new()
                .with_subprotocols([SUBPROTOCOL])
                .with_root_certificates_pem(ca.pem().as_bytes())
                .unwrap()
        };
        let err = tls().connect(&format!("wss://{addr}/ws")).await.unwrap_err();
        assert_eq!(err.received_status().map(|s| s.as_u16()), Some(401), "{err}");
        let token = signed(&json!({ "sub": "alice", "iat": now(), "exp": now() + 600 }), SECRET);
        let connected = tls()
            .with_header(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap())
            .connect(&format!("wss://{addr}/ws"))
            .await
            .unwrap();
        assert!(connected.is_tls());
        let mut alice = User { ws: connected.into_socket(), pushes: VecDeque::new(), next_id: 0 };
        assert_eq!(alice.event("welcome").await["name"], "alice");
        let joined = alice.request("room.join", json!({ "room": "lobby" })).await;
        assert_eq!(joined["status"], "ok");
        // Plain HTTP on the TLS port is not served.
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.unwrap();
        assert!(!answer.starts_with(b"HTTP/1.1 200"));
    }

    impl User {
        /// The next error reply that answers no request (`"reply": null`).
        async fn refusal(&mut self) -> Value {
            let is_refusal = |m: &Value| m.get("reply") == Some(&Value::Null);
            if let Some(at) = self.pushes.iter().position(is_refusal) {
                return self.pushes.remove(at).unwrap();
            }
            loop {
                let message = self.recv().await;
                if is_refusal(&message) {
                    return message;
                }
                self.pushes.push_back(message);
            }
        }
    }
}
