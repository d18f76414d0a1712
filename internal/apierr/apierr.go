// Package apierr is LiteLLM's error envelope, shared by the management API
// and both faces of the data plane:
//
//	{"error": {"message": "...", "type": "...", "param": "..." | null, "code": "401"}}
//
// with the HTTP status equal to code.
package apierr

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types used on the wire (LiteLLM's ProxyErrorTypes).
const (
	TypeAuth                 = "auth_error"
	TypeBadRequest           = "bad_request_error"
	TypeNotFound             = "not_found_error"
	TypeValidation           = "validation_error"
	TypeInternal             = "internal_server_error"
	TypeTokenNotFound        = "token_not_found_in_db"
	TypeKeyModelAccessDenied = "key_model_access_denied"
	TypeExpiredKey           = "expired_key"
	TypeBudgetExceeded       = "budget_exceeded"
	TypeRateLimit            = "rate_limit_error"
	TypeRequestTooLarge      = "request_too_large"
	TypeNoDBConnection       = "no_db_connection"
)

// Error is one LiteLLM error. Param nil encodes as JSON null.
type Error struct {
	Status  int // HTTP status; Code on the wire
	Type    string
	Param   *string
	Message string
}

// New returns an error with a param (use "" for null).
func New(status int, typ, param, msg string) *Error {
	e := &Error{Status: status, Type: typ, Message: msg}
	if param != "" {
		e.Param = &param
	}
	return e
}

func (e *Error) Error() string { return e.Message }

type body struct {
	Error inner `json:"error"`
}

type inner struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// JSON renders the envelope.
func (e *Error) JSON() []byte {
	b, err := json.Marshal(body{Error: inner{Message: e.Message, Type: e.Type, Param: e.Param, Code: strconv.Itoa(e.Status)}})
	if err != nil { // cannot happen: only strings
		return []byte(`{"error":{"message":"internal error","type":"internal_server_error","param":null,"code":"500"}}`)
	}
	return b
}

// Write sends the envelope with its status and content-type application/json.
func (e *Error) Write(w http.ResponseWriter) {
	b := e.JSON()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}
