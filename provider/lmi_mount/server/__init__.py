"""CIM-XML over HTTP(S): moves bytes, knows no mount logic."""
