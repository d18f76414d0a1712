package usage

import "strconv"

// BedrockHeaderUsage reads the token counts Bedrock's InvokeModel and
// Converse return in response headers (X-Amzn-Bedrock-Input-Token-Count,
// -Output-Token-Count, -Cache-Read-Input-Token-Count,
// -Cache-Write-Input-Token-Count), for model bodies that carry none (Titan,
// Mistral, Cohere, ...). get returns a header's value ("" if absent); names
// are passed lower-case, as HTTP/2 and Envoy deliver them. found is false
// without an input or output count.
func BedrockHeaderUsage(get func(name string) string) (u Usage, found bool) {
	read := func(name string) (int64, bool) {
		v := get(name)
		if v == "" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false
		}
		return min(n, maxCount), true
	}
	var r rawUsage
	if n, ok := read("x-amzn-bedrock-input-token-count"); ok {
		r.put(fInput, n)
		found = true
	}
	if n, ok := read("x-amzn-bedrock-output-token-count"); ok {
		r.put(fOutput, n)
		found = true
	}
	if n, ok := read("x-amzn-bedrock-cache-read-input-token-count"); ok {
		r.put(fCacheRead, n)
	}
	if n, ok := read("x-amzn-bedrock-cache-write-input-token-count"); ok {
		r.put(fCacheWrite, n)
	}
	if !found {
		return Usage{}, false
	}
	return r.normalize(), true
}
