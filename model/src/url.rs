//! `http://` and `https://` URLs as Cairn fetches them (apid's template downloads, init's
//! update bundles): split into scheme, host, port and path, and checked — no credentials, no
//! spaces or control characters, at most [`MAX_URL`] bytes.

/// The longest URL taken.
pub const MAX_URL: usize = 2048;

/// An `http(s)://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    /// A name or an address (an IPv6 one without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
}

impl HttpUrl {
    /// Splits `url`, or says what is wrong with it.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("bad URL {url:?}: {why}");
        if url.len() > MAX_URL {
            return Err(bad("longer than 2048 bytes"));
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces and control characters must be %-encoded"));
        }
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("not http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // The fragment is the client's alone.
        let path = path.split('#').next().unwrap_or_default();
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if authority.contains('@') {
            return Err(bad("credentials in URLs are not taken"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, rest) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, rest.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        Ok(HttpUrl {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// Where a redirect's `Location` leads from here: an absolute URL or an absolute path.
    pub fn join(&self, location: &str) -> Result<HttpUrl, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return HttpUrl::parse(location);
        }
        if location.starts_with('/') && !location.starts_with("//") {
            let mut next = self.clone();
            next.path = location.to_string();
            return Ok(next);
        }
        Err(format!(
            "{self}: a redirect to {location:?}, which is not an absolute URL or path"
        ))
    }

    /// The `Host` header: the host (bracketed when IPv6) and the port unless the default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_bad_ones_say_why() {
        let u = HttpUrl::parse("http://10.0.2.2:8000/t/debian.tar?x=1#frag").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                https: false,
                host: "10.0.2.2".into(),
                port: 8000,
                path: "/t/debian.tar?x=1".into()
            }
        );
        assert_eq!(u.to_string(), "http://10.0.2.2:8000/t/debian.tar?x=1");
        let u = HttpUrl::parse("https://[fd00::1]/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 443));
        assert_eq!(u.host_header(), "[fd00::1]");
        assert_eq!(HttpUrl::parse("https://example.org").unwrap().path, "/");
        assert_eq!(HttpUrl::parse("http://h?q").unwrap().path, "/?q");
        for bad in [
            "ftp://h/x",
            "http://",
            "http://user:pw@h/x",
            "http://h:0/x",
            "http://h:99999/x",
            "http://h/a b",
            "http://[::1/x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpUrl::parse(&format!("http://h/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn redirects_stay_absolute() {
        let u = HttpUrl::parse("https://h:8443/a/b").unwrap();
        assert_eq!(u.join("/c").unwrap().to_string(), "https://h:8443/c");
        assert_eq!(
            u.join("http://other/d").unwrap().to_string(),
            "http://other/d"
        );
        assert!(u.join("relative").is_err());
        assert!(u.join("//host/x").is_err());
    }
}
