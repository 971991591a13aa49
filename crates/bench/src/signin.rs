//! Getting an access token for the signed-in side without a browser, through Doorman's real
//! interfaces only: the authorization code flow with PKCE (S256), walking the sign-in and consent
//! pages over plain HTTP with a small cookie jar, then the token endpoint.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{StatusCode, header};

/// The pre-registered public client the bench signs in with (see `procs::SignIn::Accounts`).
pub const CLIENT_ID: &str = "bench";
/// Its registered redirect URI; nothing listens there: the code is read from the `Location`.
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One "browser": cookies kept by name, redirects never followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn keep_cookies(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(header::SET_COOKIE) {
            let Some((name, value)) = v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .and_then(|pair| pair.trim().split_once('='))
            else {
                continue;
            };
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    fn with_cookies(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.cookies.is_empty() {
            return req;
        }
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        req.header(header::COOKIE, jar.join("; "))
    }

    /// Sends a request; returns the status, the `Location` (if any) and the body.
    async fn send(
        &mut self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Option<String>, String)> {
        let r = self.with_cookies(req).send().await?;
        self.keep_cookies(&r);
        let status = r.status();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((status, location, r.text().await?))
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Option<String>, String)> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post_form(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Option<String>, String)> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(pairs));
        self.send(req).await
    }
}

/// The `Location` of a `303 See Other`, or an error naming the step and what came back instead.
fn see_other(
    step: &str,
    (status, location, body): (StatusCode, Option<String>, String),
) -> anyhow::Result<String> {
    match location {
        Some(l) if status == StatusCode::SEE_OTHER => Ok(l),
        _ => anyhow::bail!(
            "{step}: expected a 303 redirect, got {status}: {}",
            snippet(&body)
        ),
    }
}

fn page(
    step: &str,
    (status, _, body): (StatusCode, Option<String>, String),
) -> anyhow::Result<String> {
    anyhow::ensure!(
        status == StatusCode::OK,
        "{step}: expected a page, got {status}: {}",
        snippet(&body)
    );
    Ok(body)
}

fn snippet(body: &str) -> &str {
    let mut end = body.len().min(400);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// The value of attribute `attr` in one tag's text (double-quoted, as Doorman's templates write).
fn attribute<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

fn unescape(v: &str) -> String {
    v.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden inputs of the page's form: (name, value).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            if attribute(tag, "type")? != "hidden" {
                return None;
            }
            Some((
                attribute(tag, "name")?.to_owned(),
                unescape(attribute(tag, "value")?),
            ))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str, step: &str) -> anyhow::Result<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| anyhow::anyhow!("{step}: the page's form has no hidden {name:?} field"))
}

/// Signs `username` in at the Doorman at `base` (`http://127.0.0.1:PORT`, its issuer) as the
/// `bench` client, approves the consent page, and exchanges the code for an access token.
pub async fn access_token(base: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let mut b = Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        base: base.to_owned(),
        cookies: Vec::new(),
    };
    let resource = format!("{base}/mcp");
    let verifier = random_token(32)?;
    let state = random_token(16)?;

    // 1. The client sends the browser to the authorization endpoint.
    let query = form(&[
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("code_challenge", &s256(&verifier)),
        ("code_challenge_method", "S256"),
        ("state", &state),
        ("scope", "mcp"),
        ("resource", &resource),
    ]);
    let step = "GET /oauth/authorize";
    let sign_in = see_other(step, b.get(&format!("/oauth/authorize?{query}")).await?)?;
    anyhow::ensure!(
        sign_in.starts_with("/sign-in?request="),
        "{step}: sent to {sign_in}, not to the sign-in page"
    );

    // 2. The sign-in page: its form carries the CSRF cookie's value and the request id.
    let step = "GET /sign-in";
    let html = page(step, b.get(&sign_in).await?)?;
    let fields = hidden_fields(&html);
    let csrf = field(&fields, "csrf", step)?.to_owned();
    let request = field(&fields, "request", step)?.to_owned();
    anyhow::ensure!(
        b.cookie("doorman_csrf") == Some(csrf.as_str()),
        "{step}: the form's csrf is not the doorman_csrf cookie"
    );
    let step = "POST /sign-in";
    let consent = see_other(
        step,
        b.post_form(
            "/sign-in",
            &[
                ("csrf", &csrf),
                ("request", &request),
                ("username", username),
                ("password", password),
            ],
        )
        .await?,
    )?;
    anyhow::ensure!(
        consent.starts_with("/consent?request=") && b.cookie("doorman_session").is_some(),
        "{step}: sent to {consent} (session cookie: {}), not to the consent page",
        b.cookie("doorman_session").is_some()
    );

    // 3. The consent page: allow.
    let step = "GET /consent";
    let html = page(step, b.get(&consent).await?)?;
    let fields = hidden_fields(&html);
    let mut answer: Vec<(&str, &str)> = Vec::new();
    for name in ["csrf", "request", "client_id"] {
        answer.push((name, field(&fields, name, step)?));
    }
    answer.push(("decision", "allow"));
    let step = "POST /consent";
    let back = see_other(step, b.post_form("/consent", &answer).await?)?;

    // 4. Back at the client's redirect URI (not followed): code, state and iss.
    let url = reqwest::Url::parse(&back)?;
    anyhow::ensure!(
        back.starts_with(REDIRECT_URI),
        "{step}: sent to {back}, not to the redirect URI"
    );
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        anyhow::bail!(
            "{step}: the authorization failed: {error} {:?}",
            param("error_description")
        );
    }
    anyhow::ensure!(
        param("state").as_deref() == Some(state.as_str()),
        "{step}: state differs"
    );
    anyhow::ensure!(
        param("iss").as_deref() == Some(base),
        "{step}: iss is {:?}, not {base}",
        param("iss")
    );
    let code = param("code").ok_or_else(|| anyhow::anyhow!("{step}: no code in {back}"))?;

    // 5. The token endpoint (a public client: client_id in the body, PKCE verifier).
    let (status, _, body) = b
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &verifier),
                ("client_id", CLIENT_ID),
                ("resource", &resource),
            ],
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "POST /oauth/token: {status}: {}",
        snippet(&body)
    );
    let tokens: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(
        tokens["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
        "POST /oauth/token: token_type is {}",
        tokens["token_type"]
    );
    tokens["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("POST /oauth/token: no access_token in {}", snippet(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_base64url_sha256() {
        // Computed independently: base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip("=").
        assert_eq!(
            s256("doorman-bench-verifier"),
            "4s767lpVMnvVSiOH3USivv6xfo2MmFXxP6g0QgPfEf4"
        );
        assert_eq!(random_token(32).unwrap().len(), 43);
    }

    #[test]
    fn hidden_fields_of_a_form() {
        let html = r#"<form method="post" action="/consent">
<input type="hidden" name="csrf" value="abc-_1">
<input type="hidden" name="client_id" value="a&amp;b">
<input type="password" id="password" name="password" required>
<button type="submit" name="decision" value="allow" class="primary">Allow</button>"#;
        assert_eq!(
            hidden_fields(html),
            vec![
                ("csrf".into(), "abc-_1".into()),
                ("client_id".into(), "a&b".into())
            ]
        );
    }
}
