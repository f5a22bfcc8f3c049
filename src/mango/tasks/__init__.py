"""mango.tasks"""
