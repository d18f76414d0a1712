package mgmt

import (
	_ "embed"
	"net/http"
)

// openapiDoc is the OpenAPI 3 description of this API, served at
// /openapi.json. TestOpenAPI keeps it in step with the routes and responses.
//
//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3 document (a copy).
func OpenAPI() []byte { return append([]byte(nil), openapiDoc...) }

func (a *API) openapi(*http.Request, *caller) (any, error) { return rawJSON(openapiDoc), nil }
