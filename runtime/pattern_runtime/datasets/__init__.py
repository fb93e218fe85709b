"""The data sets the models are trained on and checked with, from what packages ship: the iris
and digits splits (scikit-learn), the generated topic texts. The exporter trains on them; the
store seeding, the demo, the batch job, blue-green's accuracy gate and the tests use the held-out parts."""
