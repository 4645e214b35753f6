"""A seeded, multi-table synthetic EHR extract shaped like a real multi-site feed.

``tables.generate_tables`` builds five tables in memory (``patients``, ``encounters``,
``vitals``, ``labs``, ``patient_merges``); ``parquet_extract.write_tables`` writes any such dict
as deterministic parquet plus ``extract.json``; ``parquet_extract.generate_extract`` does both.
The same arguments always give byte-identical files: every random draw comes from one
``numpy.random.default_rng(seed)`` in a fixed order, and everything is vectorized (no
per-encounter Python loops), so a million encounters take seconds.

The modules, from the bottom up: ``arrays`` (vectorized draws and formatting), ``vocabulary``
(sites, service lines, admission sources, dispositions, diagnoses, lab codes and units, sexes,
races, with their shares), ``times`` (time units; site wall clock → UTC), ``people`` (names,
encounters per person, unique identities), ``chains`` (a person's stays and gaps placed in the
window), ``observations`` (the vitals and labs tables), ``tables`` (the generator) and
``parquet_extract`` (the files). ``extract.json`` names this package as the generator.

What the data is made of, so tests and fault scenarios know what to expect:

* **People and chains.** Each person has a latent frailty ``z``. The number of encounters per
  person is ``1 + Poisson`` (mean about 1.4) and grows with ``z``. A person's encounters form a
  chain: length of stay, then a gap to the next admission, then the next stay. Gaps come from a
  mixture: a short gap (12 h to 29 days, i.e. a 30-day readmission) or a long one (at least 32
  days). The probability of a short gap is a logistic function of observable signal (prior
  admissions, age, EMERGENCY admission, CARDIOLOGY/ONCOLOGY, high creatinine, low haemoglobin,
  low sodium, length of stay, discharge to SNF or AMA) plus ``z``; its intercept is solved so that
  about 12.5 % of eligible discharges are followed by a readmission. Chains are placed inside the
  window ``[start, start + days)``; gaps are compressed only when a chain would not fit.
* **Terminal discharges.** EXPIRED (about 2 % of encounters) and HOSPICE (about 1.5 %) only
  happen on a person's last encounter.
* **Sites and time.** Encounter times are site wall-clock (naive). Times that fall in a DST gap or
  fold are moved one hour later, so every admit/discharge converts to UTC unambiguously. Vitals
  and labs are in UTC and always inside ``[admit, discharge]`` after that conversion.
* **Identifiers.** The encounter integer is unique across the extract and increases with admit
  time; each site spells it its own way (``ENC-00001234``, ``enc1234``, ``E/1234``, ``  1234  ``).
  ``(patient_name, birth_date)`` is unique per person; about 0.3 % of people are registered twice
  (an EMPI duplicate: identical name, birth date, sex, race and ZIP under a second MRN that holds
  one of their encounters), and each such pair is listed in ``patient_merges``.
* **Units.** Every lab row uses the canonical unit, except SOUTH glucose (``mmol/L``, value =
  mg/dL / 18.016, 1 decimal) and SOUTH creatinine (``umol/L``, value = mg/dL / 0.0113100, whole
  numbers), both correctly declared.
"""
