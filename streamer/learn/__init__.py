"""Pure online learners (no faust, no Kafka, no I/O)."""
