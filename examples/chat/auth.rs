//! Who may connect: user names, the login tokens (JWT HS256, signed with a secret of this
//! server's), and the upgrade's decision, taken before any WebSocket opens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use palisade::CloseCode;
use palisade::rooms::Rooms;
use palisade::server::{Accept, Decision, HandshakeRequest, Rejection};
use serde::{Deserialize, Serialize};

// ANCHOR: name
/// A user name: 3 to 32 ASCII letters, digits, `_` or `-`. Made only by [`Name::parse`], so
/// every name the chat holds is one that may be shown and logged as it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct Name(String);

impl Name {
    /// The rule, as the 400 answer to `POST /login` states it.
    pub(crate) const RULE: &'static str =
        "a name is 3 to 32 characters: ASCII letters, digits, `_` or `-`";

    pub(crate) fn parse(name: &str) -> Option<Self> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        ((3..=32).contains(&name.len()) && name.chars().all(allowed)).then(|| Self(name.to_owned()))
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
// ANCHOR_END: name

/// What a token says: whose it is and until when (seconds since the epoch). A resume token
/// (see [`Tokens::resume`]) names a session too; a login token does not.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// Who the upgrade let in: the name, and the session it takes over, if it proved one.
#[derive(Clone, Debug)]
pub(crate) struct Login {
    pub(crate) name: Name,
    pub(crate) resumes: Option<String>,
}

// ANCHOR: tokens
/// Issues and checks login tokens: JWT with HS256 only (a token that names another algorithm,
/// `none` included, is invalid), an expiry that is always checked, with no leeway.
pub(crate) struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

/// Why a token is refused; each has its own 401 body and close reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    Missing,
    Invalid,
    Expired,
}

impl Tokens {
    pub(crate) fn new(
        secret: &[u8],
        lifetime: Duration,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            lifetime,
        })
    }

    pub(crate) fn issue(&self, name: &Name) -> String {
        self.sign(name, None)
    }

    /// A resume token: proof, for a connection that comes back after its predecessor
    /// dropped, that it is that session's page and not a second login, so that it takes the
    /// session over instead of being refused as a duplicate (see `Rooms::connect_replacing`).
    /// Given to the page in `welcome`; it lives as long as a login token.
    pub(crate) fn resume(&self, name: &Name, session: &str) -> String {
        self.sign(name, Some(session.to_owned()))
    }

    fn sign(&self, name: &Name, sid: Option<String>) -> String {
        let iat = now();
        let claims = Claims { sub: name.0.clone(), iat, exp: iat + self.lifetime.as_secs(), sid };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            // HS256 signing of a plain struct has no failure case: the key is any byte string.
            .expect("HS256 signs any claims")
    }

    /// A login token's name. A resume token is not a login token.
    pub(crate) fn check(&self, token: &str) -> Result<Name, TokenError> {
        let claims = self.decode(token)?;
        if claims.sid.is_some() {
            return Err(TokenError::Invalid);
        }
        // The signature is ours, but the name is checked again rather than trusted.
        Name::parse(&claims.sub).ok_or(TokenError::Invalid)
    }

    /// The session a resume token of `name` names; `None` for anything else.
    pub(crate) fn check_resume(&self, token: &str, name: &Name) -> Option<String> {
        let claims = self.decode(token).ok()?;
        claims.sid.filter(|_| claims.sub == name.0)
    }

    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        Ok(data.claims)
    }
}
// ANCHOR_END: tokens

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

// ANCHOR: decide
/// The upgrade's decision. Tools send `Authorization: Bearer TOKEN` and get a real 401 (or
/// 409) with a JSON body; the page, which can set no header and cannot read a refused
/// handshake's status, sends its token as the subprotocol `bearer.TOKEN` next to
/// `palisade.json.v1` and asks with `?refusal=close` for the accept-then-close variant: 4001
/// (not authenticated) or 4003 (forbidden), with the reason. A connection that comes back
/// offers its last `welcome`'s resume token as the subprotocol `resume.TOKEN`: valid for this
/// name, it takes its old session over rather than being refused as a second one.
pub(crate) async fn decide(request: &HandshakeRequest, tokens: &Tokens, rooms: &Rooms) -> Decision {
    let browser = request.query_param("refusal").as_deref() == Some("close");
    let token = request.bearer_token().or_else(|| request.subprotocol_token("bearer."));
    let name = match token.map(|t| tokens.check(t)).unwrap_or(Err(TokenError::Missing)) {
        Ok(name) => name,
        Err(why) => {
            let (code, reason, detail) = match why {
                TokenError::Missing => {
                    ("missing_token", "missing token", "send the token from POST /login")
                }
                TokenError::Invalid => ("invalid_token", "invalid token", "the token is not valid"),
                TokenError::Expired => {
                    ("expired_token", "expired token", "the token has expired: log in again")
                }
            };
            // One log line per refusal, by the server: the reason, never the token.
            if browser {
                tracing::info!(reason, "refused after accept with 4001");
                return close(CloseCode(4001), reason);
            }
            let challenge = match why {
                TokenError::Missing => r#"Bearer realm="chat""#.to_owned(),
                _ => format!(
                    r#"Bearer realm="chat", error="invalid_token", error_description="{reason}""#
                ),
            };
            return Rejection::unauthorized(&challenge)
                .with_json(&serde_json::json!({ "error": code, "message": detail }))
                .with_log_reason(reason)
                .into();
        }
    };
    let resumes = request.subprotocol_token("resume.").and_then(|t| tokens.check_resume(t, &name));
    // A backend that cannot say lets the upgrade through: the session's own check follows
    // (which for a resumed session does not count the session it replaces).
    if resumes.is_none() && rooms.user_sessions(&name.0).await.unwrap_or(0) > 0 {
        if browser {
            tracing::info!(%name, "refused after accept with 4003: name already connected");
            return close(CloseCode(4003), "name already connected");
        }
        return Rejection::new(http::StatusCode::CONFLICT)
            .with_json(&serde_json::json!({
                "error": "name_in_use",
                "message": "this name has a session already",
            }))
            .with_log_reason("name already connected")
            .into();
    }
    Accept::new().with_value(Login { name, resumes }).into()
}
// ANCHOR_END: decide

fn close(code: CloseCode, reason: &str) -> Decision {
    Decision::Close(palisade::CloseFrame::lossy(code, reason))
}
