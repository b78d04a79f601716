"""The Flask-SQLAlchemy-pgevents example app, redone on signalbus's trigger capture."""
