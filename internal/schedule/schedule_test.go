package schedule

import (
	"strings"
	"testing"
	"time"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		expr, tz, wantErr string
	}{
		{"*/5 * * * *", "", ""},
		{"0 9 * * MON-FRI", "Europe/Paris", ""},
		{"@hourly", "", ""},
		{"@every 30s", "", ""},
		{"@every 500ms", "", "@every needs a duration of at least 1s"},
		{"@every soon", "", "@every needs a duration of at least 1s"},
		{"* * * *", "", "is not a cron expression"},
		{"61 * * * *", "", "is not a cron expression"},
		{"0 0 * * * *", "", "is not a cron expression"}, // seconds are not a field, as in CronJob
		{"CRON_TZ=UTC * * * * *", "", "give the time zone in timeZone"},
		{"* * * * *", "Mars/Olympus", `timeZone "Mars/Olympus" is not a known IANA time zone`},
	} {
		_, err := Parse(c.expr, c.tz)
		if (err != nil) != (c.wantErr != "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("Parse(%q, %q) = %v; want an error with %q", c.expr, c.tz, err, c.wantErr)
		}
	}
}

func TestTimeZone(t *testing.T) {
	s, err := Parse("0 9 * * *", "Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	got := s.Next(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 7, 1, 7, 0, 0, 0, time.UTC); !got.Equal(want) { // CEST is UTC+2
		t.Fatalf("Next = %v, want %v", got.UTC(), want)
	}
}

func TestDue(t *testing.T) {
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	every5m, _ := Parse("*/5 * * * *", "")
	every1s, _ := Parse("@every 1s", "")
	for _, c := range []struct {
		name     string
		s        *Schedule
		last     time.Time
		now      time.Time
		deadline time.Duration
		tick     time.Time // zero: none
		run      bool
		missed   int
	}{
		{"nothing due yet", every5m, base, base.Add(4 * time.Minute), 0, time.Time{}, false, 0},
		{"one tick due", every5m, base, base.Add(5*time.Minute + time.Second), 0, base.Add(5 * time.Minute), true, 0},
		{"on the tick", every5m, base, base.Add(5 * time.Minute), 0, base.Add(5 * time.Minute), true, 0},
		{"three due: the last runs", every5m, base, base.Add(16 * time.Minute), 0, base.Add(15 * time.Minute), true, 2},
		{"within the deadline", every5m, base, base.Add(5*time.Minute + 30*time.Second), time.Minute, base.Add(5 * time.Minute), true, 0},
		{"past the deadline", every5m, base, base.Add(8 * time.Minute), time.Minute, time.Time{}, false, 1},
		{"a day down, deadline 1m", every5m, base, base.Add(24*time.Hour + 30*time.Second), time.Minute, base.Add(24 * time.Hour), true, MaxMissed},
		{"a day down every second, no deadline", every1s, base, base.Add(24 * time.Hour), 0, base.Add(24 * time.Hour), true, MaxMissed},
		{"a year down every second, no deadline", every1s, base, base.Add(365 * 24 * time.Hour), 0, base.Add(365 * 24 * time.Hour), true, MaxMissed},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.s.Due(c.last, c.now, c.deadline)
			if !d.Tick.Equal(c.tick) || d.Run != c.run || d.Missed != c.missed {
				t.Fatalf("Due = tick %v run %v missed %d; want %v %v %d", d.Tick, d.Run, d.Missed, c.tick, c.run, c.missed)
			}
			if !d.Next.After(c.now) {
				t.Fatalf("Next %v is not after now %v", d.Next, c.now)
			}
		})
	}
}

func TestCheckSpec(t *testing.T) {
	exports := []string{"warm", "report"}
	ok := []wasmv1.Schedule{{Name: "a", Schedule: "*/5 * * * *", Function: "warm"}, {Name: "b", Schedule: "@every 1m", Function: "report", TimeZone: "Asia/Tokyo"}}
	if err := CheckSpec(ok, exports); err != nil {
		t.Fatalf("valid schedules refused: %v", err)
	}
	bad := []wasmv1.Schedule{
		{Name: "range", Schedule: "0 25 * * *", Function: "warm"},
		{Name: "zone", Schedule: "@hourly", Function: "warm", TimeZone: "Europe/Atlantis"},
		{Name: "fn", Schedule: "@hourly", Function: "cool"},
	}
	err := CheckSpec(bad, exports)
	for _, want := range []string{`schedule range: schedule "0 25 * * *" is not a cron expression`,
		`schedule zone: timeZone "Europe/Atlantis" is not a known IANA time zone`,
		`schedule fn: the module exports no function "cool" (it exports [warm report])`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSpec = %v; want it to say %q", err, want)
		}
	}
}
