// Package schedule parses the cron expressions of spec.schedules and decides, CronJob-like, which tick is
// due: the most recent one not yet run, if it is not older than the starting deadline, with a count of the
// ticks skipped. It knows nothing of Kubernetes or plugins; the controller's leader (Cluster scope) and each
// host (Node scope) keep the last tick they ran and ask Due on a timer set to Next.
//
//	s, err := schedule.Parse("*/5 * * * *", "Europe/Paris")
//	d := s.Due(lastRun, time.Now(), time.Minute)
//	if d.Run { run(d.Tick) }
//	timer.Reset(time.Until(d.Next))
package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MinEvery is the shortest "@every" interval.
const MinEvery = time.Second

// MaxMissed bounds how many missed ticks Due counts, so that a schedule every second after a day of
// downtime costs a bounded amount of work; Decision.Missed is then "at least MaxMissed".
const MaxMissed = 100

// parser accepts what CronJob accepts: five fields and the descriptors (@hourly, @every 30s, ...).
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a parsed cron expression in its time zone.
type Schedule struct {
	expr  string
	sched cron.Schedule
	loc   *time.Location
}

// Parse parses a five-field cron expression ("*/5 * * * *"), a descriptor (@yearly, @monthly, @weekly,
// @daily, @hourly) or "@every <duration>" of at least MinEvery, in the IANA time zone timeZone ("" is UTC).
// Time zones in the expression itself (CRON_TZ=, TZ=) are refused: timeZone says it.
func Parse(expr, timeZone string) (*Schedule, error) {
	if strings.Contains(expr, "TZ=") {
		return nil, fmt.Errorf("schedule %q: give the time zone in timeZone, not in the expression", expr)
	}
	loc := time.UTC
	if timeZone != "" {
		var err error
		if loc, err = time.LoadLocation(timeZone); err != nil {
			return nil, fmt.Errorf("timeZone %q is not a known IANA time zone (such as Europe/Paris): %w", timeZone, err)
		}
	}
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < MinEvery {
			return nil, fmt.Errorf("schedule %q: @every needs a duration of at least %v, such as @every 30s", expr, MinEvery)
		}
	}
	s, err := parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("schedule %q is not a cron expression (minute hour day-of-month month day-of-week, or @hourly, @every 30s...): %w", expr, err)
	}
	return &Schedule{expr: expr, sched: s, loc: loc}, nil
}

// String returns the expression.
func (s *Schedule) String() string { return s.expr }

// Next returns the first tick after t.
func (s *Schedule) Next(t time.Time) time.Time {
	return s.sched.Next(t.In(s.loc))
}

// Decision is what Due found.
type Decision struct {
	// Tick is the most recent tick after the last one run, not after now and, with a starting deadline,
	// not older than it; zero when none is due.
	Tick time.Time
	// Run is true when Tick is set: it should run now.
	Run bool
	// Missed counts the ticks after the last one run, up to now, that do not run: those before Tick and
	// those past the starting deadline. At most MaxMissed.
	Missed int
	// Next is the first tick after now: when to ask again.
	Next time.Time
}

// Due decides what runs at now, given last, the last tick run (or when the schedule was created or first
// seen, when none ran). Only the most recent tick due runs, once, as for a CronJob; with a positive
// startingDeadline, only if now is at most that long after it. The work is bounded whatever the gap
// since last.
func (s *Schedule) Due(last, now time.Time, startingDeadline time.Duration) Decision {
	d := Decision{Next: s.Next(now)}
	from := last
	if startingDeadline > 0 {
		if edge := now.Add(-startingDeadline); edge.After(from) {
			from = edge
		}
	}
	d.Tick = s.latest(from, now)
	d.Run = !d.Tick.IsZero()
	for t := s.Next(last); !t.After(now) && d.Missed < MaxMissed; t = s.Next(t) {
		if !t.Equal(d.Tick) {
			d.Missed++
		}
	}
	return d
}

// latest returns the last tick in (after, now], or zero. Cron schedules only step forward, so it looks
// back from now in doubling steps until a tick falls in the window, then steps forward from there.
func (s *Schedule) latest(after, now time.Time) time.Time {
	for k := time.Second; ; k *= 2 {
		start := now.Add(-k)
		if !start.After(after) {
			start = after
		}
		if t := s.Next(start); !t.After(now) {
			last := t
			for t = s.Next(t); !t.After(now); t = s.Next(t) {
				last = t
			}
			return last
		}
		if start.Equal(after) {
			return time.Time{}
		}
	}
}
