package dockerregistry

// The grammars below follow the OCI distribution specification: a name
// component is [a-z0-9]+ with single separators ".", "_", "__" or runs of
// "-" between alphanumeric runs; a tag is [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127};
// a digest is algorithm ":" encoded. They are written out by hand because
// they run on every request.

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// isValidNameComponent checks one slash-separated component of a
// repository name.
func isValidNameComponent(s string) bool {
	if s == "" || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if isLowerAlnum(c) {
			continue
		}
		switch c {
		case '.':
			if !isLowerAlnum(s[i+1]) {
				return false
			}
		case '_':
			// "_" or "__", then an alphanumeric
			if s[i+1] == '_' {
				i++
				if i+1 >= len(s) || !isLowerAlnum(s[i+1]) {
					return false
				}
			} else if !isLowerAlnum(s[i+1]) {
				return false
			}
		case '-':
			// any run of dashes, then an alphanumeric
		default:
			return false
		}
	}
	return true
}

func isValidTag(s string) bool {
	if s == "" || len(s) > 128 || !(isAlnum(s[0]) || s[0] == '_') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// isValidDigest checks algorithm ":" encoded, where algorithm components
// are [a-z0-9]+ joined by "+", ".", "_" or "-", and encoded is
// [a-zA-Z0-9=_-]+. For the two registered algorithms it also checks the
// encoded length and that it is lowercase hex, as registries do.
func isValidDigest(s string) bool {
	colon := -1
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 || colon == len(s)-1 {
		return false
	}
	algorithm, encoded := s[:colon], s[colon+1:]
	if !isValidAlgorithm(algorithm) {
		return false
	}
	switch algorithm {
	case "sha256":
		return len(encoded) == 64 && isLowerHex(encoded)
	case "sha512":
		return len(encoded) == 128 && isLowerHex(encoded)
	}
	for i := 0; i < len(encoded); i++ {
		c := encoded[i]
		if !(isAlnum(c) || c == '=' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func isValidAlgorithm(s string) bool {
	if !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if isLowerAlnum(c) {
			continue
		}
		if c != '+' && c != '.' && c != '_' && c != '-' || !isLowerAlnum(s[i+1]) {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isValidUploadID accepts the opaque upload session ids that registries
// hand out (UUIDs in Nexus and the distribution registry, base64url
// elsewhere): at most 512 characters from the unreserved set of RFC 3986
// plus "=", "+", ":" and "@".
func isValidUploadID(s string) bool {
	if len(s) > 512 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) {
			continue
		}
		switch c {
		case '-', '.', '_', '~', '=', '+', ':', '@':
		default:
			return false
		}
	}
	return true
}
