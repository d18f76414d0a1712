package apierr

import (
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestEnvelope(t *testing.T) {
	tests := []struct {
		name      string
		err       *Error
		wantParam any // nil for JSON null
	}{
		{"string param", New(401, TypeAuth, "None", "Authentication Error, No api key passed in."), "None"},
		{"null param", New(400, TypeBudgetExceeded, "", "Budget has been exceeded! Current cost: 1.0, Max budget: 1.0"), nil},
		{"quotes and control characters", New(404, TypeNotFound, "key", "bad \"key\"\n\t<x>"), "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc map[string]map[string]any
			if err := json.Unmarshal(tt.err.JSON(), &doc); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if len(doc) != 1 || len(doc["error"]) != 4 {
				t.Fatalf("want exactly {\"error\": {message, type, param, code}}, got %v", doc)
			}
			e := doc["error"]
			if e["message"] != tt.err.Message || e["type"] != tt.err.Type || e["param"] != tt.wantParam {
				t.Errorf("got %v", e)
			}
			if e["code"] != strconv.Itoa(tt.err.Status) {
				t.Errorf("code %v (%T), want the status as a string", e["code"], e["code"])
			}

			w := httptest.NewRecorder()
			tt.err.Write(w)
			if w.Code != tt.err.Status || w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("Write: status %d content-type %q", w.Code, w.Header().Get("Content-Type"))
			}
			if w.Body.String() != string(tt.err.JSON()) || w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) {
				t.Errorf("Write body/length mismatch: %q", w.Body.String())
			}
			if tt.err.Error() != tt.err.Message {
				t.Errorf("Error() = %q", tt.err.Error())
			}
		})
	}
}
