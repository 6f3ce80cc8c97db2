package climatiq

import "testing"

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Op: "create key", StatusCode: 401, Code: "invalid_management_key", Message: "bad key"}, "climatiq: create key: 401 Unauthorized: bad key (invalid_management_key)"},
		{&Error{Op: "delete key", StatusCode: 404, Message: "Not Found"}, "climatiq: delete key: 404 Not Found"},
		{&Error{Op: "list keys", StatusCode: 200, Message: "invalid JSON in response"}, "climatiq: list keys: 200 OK: invalid JSON in response"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
