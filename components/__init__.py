"""Streamlit custom components used by the Linkdesk dashboard."""
