"""asdesk.training"""
