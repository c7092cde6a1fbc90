package store

import "github.com/prometheus/client_golang/prometheus"

var (
	bytesDesc = prometheus.NewDesc("wasm_operator_store_bytes",
		"Total size of the modules in the shared cache.", nil, nil)
	entriesDesc = prometheus.NewDesc("wasm_operator_store_entries",
		"Number of modules in the shared cache.", nil, nil)
)

// sizeCollector reads the folder at each scrape, so the numbers are right even
// though several processes write to it.
type sizeCollector struct{ s *Store }

func (c *sizeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bytesDesc
	ch <- entriesDesc
}

func (c *sizeCollector) Collect(ch chan<- prometheus.Metric) {
	es, err := c.s.List()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(bytesDesc, err)
		ch <- prometheus.NewInvalidMetric(entriesDesc, err)
		return
	}
	var total int64
	for _, e := range es {
		total += e.Size
	}
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(len(es)))
}
