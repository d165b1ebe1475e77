"""The live Panel dashboard: data store, views and app assembly."""
