"""The Pi agent: reads the Shelly Pro 3EM at 1 Hz, spools every reading, serves them to the PC."""
