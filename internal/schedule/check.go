package schedule

import (
	"errors"
	"fmt"
	"slices"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// CheckSpec reports, in one error, every schedule that cannot run although the API server accepted it: an
// expression cron cannot parse (a field out of range), an unknown time zone, or a function the module does
// not export (exports as in status.module.exports). The controller turns it into Stalled, reason
// InvalidSchedule.
func CheckSpec(schedules []wasmv1.Schedule, exports []string) error {
	var errs []error
	for _, s := range schedules {
		if _, err := Parse(s.Schedule, s.TimeZone); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", s.Name, err))
		}
		if !slices.Contains(exports, s.Function) {
			errs = append(errs, fmt.Errorf("schedule %s: the module exports no function %q (it exports %v)", s.Name, s.Function, exports))
		}
	}
	return errors.Join(errs...)
}
