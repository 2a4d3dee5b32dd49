"""Kafka client wrappers: every place aurora-streams writes to Kafka outside Faust goes
through :class:`aurora_streams.kafka.producer.RecordProducer`."""
