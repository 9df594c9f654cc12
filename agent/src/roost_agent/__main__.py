from roost_agent.cli import main

main()
